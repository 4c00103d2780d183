// Argument checks of simvae_fast::latent_forward / latent_backward, shared by the CPU (stable ABI) and CUDA
// implementations (the public simvae_latent validates first; these guard direct calls of the ops). Templates
// over the tensor type as in op_common.h. Errors name the argument.
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "latent_prior.h"
#include "op_common.h"

namespace simvae {

struct Checked {
  Prior prior;
  LatentCoefficients coefficients;
};

template <typename Tensor>
Checked check_inputs(const Tensor& mu, const Tensor& logvar, const std::optional<Tensor>& eps, double sigma2,
                     std::string_view prior_name) {
  check_groups(mu, "mu");
  dtype_of(mu.scalar_type(), "mu");
  check_like(logvar, "logvar", mu, "mu");
  if (eps.has_value()) check_like(*eps, "eps", mu, "mu");
  const Prior prior = parse_prior(prior_name.data(), prior_name.size());
  STD_TORCH_CHECK(prior != Prior::kUnknown, "prior: expected 'gaussian', 'flat', 'official' or 'standard', got '",
                  std::string(prior_name), "'");
  STD_TORCH_CHECK(sigma2 > 0.0 && std::isfinite(sigma2), "sigma2: expected a positive finite value, got ", sigma2);
  const int64_t views = mu.size(1), dims = mu.size(2);
  STD_TORCH_CHECK(prior == Prior::kStandard || views >= 2, "prior: a grouped prior needs J >= 2 views, got J = ",
                  views);
  return {prior, latent_coefficients(prior, sigma2, views, dims)};
}

// The forward's z handed to the backward (t = z − μ is taken from it): like mu in shape, dtype and device.
template <typename Tensor>
void check_saved_z(const Tensor& mu, const std::optional<Tensor>& z) {
  if (z.has_value()) check_like(*z, "z", mu, "mu");
}

template <typename Tensor>
void check_upstream(const Tensor& mu, const Tensor& grad_z, const Tensor& grad_log_prior,
                    const Tensor& grad_entropy) {
  STD_TORCH_CHECK(grad_z.sizes() == mu.sizes(), "grad_z: expected shape ", shape_string(mu), ", got ",
                  shape_string(grad_z));
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"grad_log_prior", &grad_log_prior},
                                {"grad_entropy", &grad_entropy}}) {
    STD_TORCH_CHECK(t->dim() == 1 && t->size(0) == mu.size(0), name, ": expected shape [", mu.size(0), "], got ",
                    shape_string(*t));
  }
}

}  // namespace simvae
