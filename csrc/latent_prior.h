// The grouped-view prior's per-call coefficients (docs/math.md §2), shared by the CPU and CUDA kernels.
// Host-only C++, no torch.
//
// Per group, with z̄ = (1/J) Σ_j z_j, S_w = Σ_j ‖z_j − z̄‖² and M = ‖z̄‖², every grouped prior is
//   log p = log_prior_const − within · S_w − mean · M
//   gaussian: within = 1/(2σ²), mean = 1/(2v), v = 1 + σ²/J,
//             const = −((J−1)D/2) log(2πσ²) − (D/2) log J − (D/2) log(2πv)
//   flat:     within = 1/(2σ²), mean = 0,      const = −((J−1)D/2) log(2πσ²) − (D/2) log J
//   official: within = 1/(2σ²), mean = 1/2,    const = 0
// and, because Σ_j (z_j − z̄) = 0, its gradient is ∂log p/∂z_j = −2·within·(z_j − z̄) − (2·mean/J)·z̄.
// standard (not grouped): log p = log_prior_const − within · Σ_j ‖z_j‖², within = 1/2,
//   const = −(JD/2) log 2π, gradient −2·within·z_j = −z_j.
// Entropy: H = entropy_const + ½ Σ logvar, entropy_const = (JD/2)(1 + log 2π).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace simvae {

enum class Prior { kGaussian, kFlat, kOfficial, kStandard, kUnknown };

inline Prior parse_prior(const char* name, std::size_t length) {
  auto is = [&](const char* candidate) {
    return std::strlen(candidate) == length && std::strncmp(name, candidate, length) == 0;
  };
  if (is("gaussian")) return Prior::kGaussian;
  if (is("flat")) return Prior::kFlat;
  if (is("official")) return Prior::kOfficial;
  if (is("standard")) return Prior::kStandard;
  return Prior::kUnknown;
}

struct LatentCoefficients {
  bool grouped;  // false for "standard": no coupling of the views, no z̄
  double within, mean, log_prior_const, entropy_const;
};

inline LatentCoefficients latent_coefficients(Prior prior, double sigma2, int64_t views, int64_t dims) {
  const double two_pi = 2.0 * M_PI, J = static_cast<double>(views), D = static_cast<double>(dims);
  const double entropy_const = 0.5 * J * D * (1.0 + std::log(two_pi));
  if (prior == Prior::kStandard) return {false, 0.5, 0.0, -0.5 * J * D * std::log(two_pi), entropy_const};
  const double within = 0.5 / sigma2;
  if (prior == Prior::kOfficial) return {true, within, 0.5, 0.0, entropy_const};
  const double log_norm = -0.5 * (J - 1.0) * D * std::log(two_pi * sigma2) - 0.5 * D * std::log(J);
  if (prior == Prior::kFlat) return {true, within, 0.0, log_norm, entropy_const};
  const double v = 1.0 + sigma2 / J;
  return {true, within, 0.5 / v, log_norm - 0.5 * D * std::log(two_pi * v), entropy_const};
}

}  // namespace simvae
