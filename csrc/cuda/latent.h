// Torch-free launchers of the fused latent op's CUDA kernels (csrc/cuda/latent.cu): raw pointers and a
// cudaStream_t, so that the .cu file compiles with plain nvcc. csrc/cuda/latent_cuda.cpp wraps them as the
// CUDA implementations of simvae_fast::latent_forward / latent_backward.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../dtype.h"

namespace simvae {

// Shapes, noise and prior coefficients of one call (coefficients as in csrc/latent_prior.h). Tensors are
// contiguous [G, J, D] in `dtype`; log_prior, entropy and their gradients are [G] in the accumulation dtype
// (double for kFloat64, float otherwise). eps == nullptr: ε_i = tl.randn(seed, offset + i) made in-kernel.
struct LatentProblem {
  Dtype dtype;
  int64_t groups, views, dims;
  uint64_t seed, offset;
  bool grouped;
  double within, mean, log_prior_const, entropy_const;
};

cudaError_t latent_forward_cuda(const LatentProblem& problem, const void* mu, const void* logvar, const void* eps,
                                void* z, void* log_prior, void* entropy, cudaStream_t stream);

// saved_z: the forward's z (z and t = z − μ taken from it), or nullptr to recompute both from μ, logvar, ε.
cudaError_t latent_backward_cuda(const LatentProblem& problem, const void* grad_z, const void* grad_log_prior,
                                 const void* grad_entropy, const void* mu, const void* logvar, const void* eps,
                                 const void* saved_z, void* grad_mu, void* grad_logvar, cudaStream_t stream);

}  // namespace simvae
