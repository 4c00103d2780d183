// Argument checks shared by the CPU and CUDA implementations of simvae_fast::latent_forward / latent_backward
// (the public simvae_latent validates first; these guard direct calls of the ops). Errors name the argument.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>
#include <string>
#include <utility>

#include "latent_prior.h"

namespace simvae {

struct Checked {
  Prior prior;
  LatentCoefficients coefficients;
};

inline Checked check_inputs(const at::Tensor& mu, const at::Tensor& logvar, const std::optional<at::Tensor>& eps,
                     double sigma2, c10::string_view prior_name) {
  TORCH_CHECK(mu.dim() == 3, "mu: expected a 3-D tensor [G, J, D], got ", mu.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"logvar", &logvar},
                                {"eps", eps.has_value() ? &*eps : nullptr}}) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->sizes() == mu.sizes(), name, ": expected shape ", mu.sizes(), " like mu, got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == mu.scalar_type(), name, ": expected dtype ", mu.scalar_type(),
                " like mu, got ", t->scalar_type());
    TORCH_CHECK(t->device() == mu.device(), name, ": expected device ", mu.device(), " like mu, got ", t->device());
  }
  const Prior prior = parse_prior(prior_name.data(), prior_name.size());
  TORCH_CHECK(prior != Prior::kUnknown, "prior: expected 'gaussian', 'flat', 'official' or 'standard', got '",
              std::string(prior_name.data(), prior_name.size()), "'");
  TORCH_CHECK(sigma2 > 0.0 && std::isfinite(sigma2), "sigma2: expected a positive finite value, got ", sigma2);
  const int64_t views = mu.size(1), dims = mu.size(2);
  TORCH_CHECK(prior == Prior::kStandard || views >= 2, "prior: a grouped prior needs J >= 2 views, got J = ", views);
  return {prior, latent_coefficients(prior, sigma2, views, dims)};
}

// The forward's z handed to the backward (t = z − μ is taken from it): like mu in shape, dtype and device.
inline void check_saved_z(const at::Tensor& mu, const std::optional<at::Tensor>& z) {
  if (!z.has_value()) return;
  TORCH_CHECK(z->sizes() == mu.sizes(), "z: expected shape ", mu.sizes(), " like mu, got ", z->sizes());
  TORCH_CHECK(z->scalar_type() == mu.scalar_type(), "z: expected dtype ", mu.scalar_type(), " like mu, got ",
              z->scalar_type());
  TORCH_CHECK(z->device() == mu.device(), "z: expected device ", mu.device(), " like mu, got ", z->device());
}

inline void check_upstream(const at::Tensor& mu, const at::Tensor& grad_z, const at::Tensor& grad_log_prior,
                           const at::Tensor& grad_entropy) {
  TORCH_CHECK(grad_z.sizes() == mu.sizes(), "grad_z: expected shape ", mu.sizes(), ", got ", grad_z.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_log_prior", &grad_log_prior},
                                {"grad_entropy", &grad_entropy}}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == mu.size(0), name, ": expected shape [", mu.size(0), "], got ",
                t->sizes());
  }
}

}  // namespace simvae
