// CUDA implementations of simvae_fast::latent_forward / latent_backward (schemas in csrc/module.cpp): check
// (csrc/latent_op_checks.h), make contiguous, allocate, and call the torch-free launchers of csrc/cuda/latent.cu
// on the current stream. c10/cuda headers only (ATen/cuda/CUDAContext.h does not build with this machine's
// toolkit); on the ATen API like the InfoNCE registrations beside it (csrc/module_cuda.cpp says why).
// Empty inputs launch nothing: G = 0 or D = 0 give empty z / gradients, and log p and H of a group with no
// dims are the prior's and entropy's constants (0 at D = 0), by tensor fills.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../latent_op_checks.h"
#include "latent.h"

namespace simvae {
namespace {

LatentProblem make_problem(const at::Tensor& mu, int64_t seed, int64_t offset, const LatentCoefficients& c) {
  return {dtype_of(mu.scalar_type(), "mu"), mu.size(0), mu.size(1), mu.size(2), static_cast<uint64_t>(seed),
          static_cast<uint64_t>(offset), c.grouped, c.within, c.mean, c.log_prior_const, c.entropy_const};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> latent_forward_cuda_op(const at::Tensor& mu_in,
                                                                      const at::Tensor& logvar_in,
                                                                      const std::optional<at::Tensor>& eps_in,
                                                                      int64_t seed, int64_t offset, double sigma2,
                                                                      c10::string_view prior_name) {
  const Checked checked = check_inputs(mu_in, logvar_in, eps_in, sigma2, prior_name);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  const at::Tensor mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  const at::Tensor eps = eps_in.has_value() ? eps_in->contiguous() : at::Tensor();
  at::Tensor z = at::empty_like(mu);
  const auto acc = mu.options().dtype(accumulation_scalar_type(dtype_of(mu.scalar_type(), "mu")));
  if (mu.numel() == 0)
    return {z, at::full({mu.size(0)}, checked.coefficients.log_prior_const, acc),
            at::full({mu.size(0)}, checked.coefficients.entropy_const, acc)};
  at::Tensor log_prior = at::empty({mu.size(0)}, acc);
  at::Tensor entropy = at::empty({mu.size(0)}, acc);
  C10_CUDA_CHECK(latent_forward_cuda(make_problem(mu, seed, offset, checked.coefficients), mu.const_data_ptr(),
                                     logvar.const_data_ptr(), eps.defined() ? eps.const_data_ptr() : nullptr,
                                     z.mutable_data_ptr(), log_prior.mutable_data_ptr(), entropy.mutable_data_ptr(),
                                     c10::cuda::getCurrentCUDAStream()));
  return {z, log_prior, entropy};
}

std::tuple<at::Tensor, at::Tensor> latent_backward_cuda_op(const at::Tensor& grad_z_in,
                                                           const at::Tensor& grad_log_prior_in,
                                                           const at::Tensor& grad_entropy_in, const at::Tensor& mu_in,
                                                           const at::Tensor& logvar_in,
                                                           const std::optional<at::Tensor>& eps_in,
                                                           const std::optional<at::Tensor>& z_in, int64_t seed,
                                                           int64_t offset, double sigma2,
                                                           c10::string_view prior_name) {
  const Checked checked = check_inputs(mu_in, logvar_in, eps_in, sigma2, prior_name);
  check_saved_z(mu_in, z_in);
  check_upstream(mu_in, grad_z_in, grad_log_prior_in, grad_entropy_in);
  const c10::cuda::CUDAGuard guard(mu_in.device());
  if (mu_in.numel() == 0) return {at::empty_like(mu_in), at::empty_like(mu_in)};
  const at::Tensor mu = mu_in.contiguous(), logvar = logvar_in.contiguous();
  const at::Tensor eps = eps_in.has_value() ? eps_in->contiguous() : at::Tensor();
  const at::Tensor saved_z = z_in.has_value() ? z_in->contiguous() : at::Tensor();
  const at::Tensor grad_z = grad_z_in.to(mu.scalar_type()).contiguous();
  const at::ScalarType acc = accumulation_scalar_type(dtype_of(mu.scalar_type(), "mu"));
  const at::Tensor grad_log_prior = grad_log_prior_in.to(acc).contiguous();
  const at::Tensor grad_entropy = grad_entropy_in.to(acc).contiguous();
  at::Tensor grad_mu = at::empty_like(mu), grad_logvar = at::empty_like(mu);
  C10_CUDA_CHECK(latent_backward_cuda(make_problem(mu, seed, offset, checked.coefficients), grad_z.const_data_ptr(),
                                      grad_log_prior.const_data_ptr(), grad_entropy.const_data_ptr(),
                                      mu.const_data_ptr(), logvar.const_data_ptr(),
                                      eps.defined() ? eps.const_data_ptr() : nullptr,
                                      saved_z.defined() ? saved_z.const_data_ptr() : nullptr,
                                      grad_mu.mutable_data_ptr(), grad_logvar.mutable_data_ptr(),
                                      c10::cuda::getCurrentCUDAStream()));
  return {grad_mu, grad_logvar};
}

}  // namespace
}  // namespace simvae

TORCH_LIBRARY_IMPL(simvae_fast, CUDA, m) {
  m.impl("latent_forward", &simvae::latent_forward_cuda_op);
  m.impl("latent_backward", &simvae::latent_backward_cuda_op);
}
