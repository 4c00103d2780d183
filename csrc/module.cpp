// The extension simvae_fast._C, on the LibTorch stable ABI: it defines every op's schema, once, and holds the
// CPU kernels (latent_cpu.cpp, info_nce_cpu.cpp). Built with TORCH_TARGET_VERSION (the oldest torch it loads
// into) and CPython's limited API, one build serves every torch from that version on and every Python from 3.10
// on. The CUDA kernels register into these schemas from simvae_fast._C_cuda, imported only when torch has CUDA.
// The Triton ops are defined in Python (simvae_fast/ops/), with schemas of the same form.
#include <torch/csrc/stable/library.h>

#include "python_module.h"

STABLE_TORCH_LIBRARY(simvae_fast, m) {
  m.def(
      "latent_forward(Tensor mu, Tensor logvar, Tensor? eps, int seed, int offset, float sigma2, str prior) "
      "-> (Tensor z, Tensor log_prior, Tensor entropy)");
  m.def(
      "latent_backward(Tensor grad_z, Tensor grad_log_prior, Tensor grad_entropy, Tensor mu, Tensor logvar, "
      "Tensor? eps, Tensor? z, int seed, int offset, float sigma2, str prior) -> (Tensor grad_mu, Tensor grad_logvar)");
  m.def(
      "info_nce_forward(Tensor z, Tensor temperature, bool normalize, bool positives_logsumexp) "
      "-> (Tensor loss, Tensor lse, Tensor positive)");
  m.def(
      "info_nce_backward(Tensor grad_loss, Tensor z, Tensor temperature, Tensor lse, Tensor positive, "
      "bool normalize, bool positives_logsumexp) -> (Tensor grad_z, Tensor grad_temperature)");
}

SIMVAE_PYTHON_MODULE(_C)
