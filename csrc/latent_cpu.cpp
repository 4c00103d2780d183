// Fused latent op on the CPU: reparameterised sample, entropy and grouped-view prior (docs/math.md §2-3),
// forward and backward: the CPU kernels of simvae_fast::latent_forward / latent_backward (schemas in
// module.cpp), on the LibTorch stable ABI (torch/csrc/stable: one build loads into every torch it targets).
//
// Layout: mu, logvar, eps, z are contiguous [G, J, D]; element (g, j, d) is at i = (g·J + j)·D + d.
// Noise: eps given, or ε_i = tl.randn(seed, offset + i) made here (Philox: philox_avx2.h on AVX2 CPUs,
// philox.h elsewhere; Box-Muller below), in the forward only for float32/float64, never stored.
// Work: blocks of groups are handed out to threads (parallel_groups: torch's parallel_for, OpenMP); a group is
// swept in chunks of kChunk dims, and a chunk's J·kChunk values of z (and std·ε) stay in a per-thread
// scratch in L1, so each input is read once from memory per direction and no G·J·D temporary exists. Each
// view's row of a chunk is sampled in one pass (exp, z, the z̄ sum and the Σ logvar lanes together); sums
// are kept per lane and reduced once per group. Inner loops are plain loops over arrays (vectorised by gcc:
// the exp/log/cos/sqrt below are branch-free); target_clones compiles an AVX2+FMA copy chosen at load time
// next to the baseline one (target_clones.h: where the compiler and libc support it). Philox is written with
// AVX2 intrinsics (gcc's vectorisation of its 32×32→64-bit products is shuffle-heavy: ≈ 6× slower).
//
// Forward per group (docs/math.md §2-3; coefficients in latent_prior.h):
//   z_j = μ_j + exp(½ logvar_j) ⊙ ε_j
//   grouped priors: z̄ = (1/J) Σ_j z_j, S_w = Σ_j ‖z_j − z̄‖² (two passes over the chunk: stable), M = ‖z̄‖²,
//                   log p = const − within·S_w − mean·M
//   standard:       log p = const − within·Σ_j ‖z_j‖²
//   H = entropy_const + ½ Σ logvar
// Backward per group, a = ∂L/∂log p_g, b = ∂L/∂H_g, with z and t = std ⊙ ε of the forward:
//   ∂log p/∂z_j = −2·within·(z_j − z̄) − (2·mean/J)·z̄   (grouped),   −2·within·z_j   (standard)
//   dz_total = dz + a·∂log p/∂z;  dμ = dz_total;  dlogvar = dz_total ⊙ ε ⊙ ½ exp(½ logvar) + ½ b
//                                                          = ½ · dz_total ⊙ t + ½ b
// Where z and t come from (the autograd glue, simvae_fast/ops/latent.py, picks by dtype):
// - float32/float64: the saved z output (`z` argument), t = z − μ. No ε is made or read, no exp, and logvar
//   is not read. z = fl(μ + t), so fl(z − μ) = t + δ with |δ| ≤ 2⁻²⁴(|z| + |t|) in fp32 (2⁻⁵³ in fp64): a
//   relative error ≈ 2⁻²⁴·|z|/|t| of the noise part of dlogvar (≈ 6e-7 for std ≈ 0.1, |μ| ≈ 1), below the
//   fp32 rounding of the output itself; z and z̄ are the forward's own values.
// - float16/bfloat16 (`z` absent): z and t are recomputed in fp32 exactly as the forward, ε regenerated (or
//   re-read). With a bf16 z, z − μ would carry an absolute error ≈ 2⁻⁹|z|, which relative to std·ε is large
//   whenever std ≪ |μ| (std ≈ 0.1, |μ| ≈ 1 gives ≈ 2% error in the noise part of dlogvar); the regenerated t
//   is the forward's own fp32 value, so the gradient is exact for the computed forward.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>
#include <tuple>

#include "latent_op_checks.h"
#include "latent_prior.h"
#include "op_common.h"
#include "philox.h"
#include "target_clones.h"
#if SIMVAE_HAVE_TARGET_CLONES
#include "philox_avx2.h"
#endif

namespace simvae {
namespace {

using torch::stable::Tensor;

constexpr int64_t kChunk = 64;  // dims per step of a group sweep

SIMVAE_INLINE float bits_to_float(int32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

SIMVAE_INLINE int32_t float_to_bits(float value) {
  int32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// condition ? a : b by bit masks: gcc (with -ftrapping-math, its default) does not turn a branch between
// two computed floats into a vector blend, and a branch stops vectorisation.
SIMVAE_INLINE float select(bool condition, float a, float b) {
  const int32_t mask = -static_cast<int32_t>(condition);
  return bits_to_float((float_to_bits(a) & mask) | (float_to_bits(b) & ~mask));
}

// exp(x) in float, branch-free (Cephes expf): x = n·ln2 + r, n = round(x·log2 e) by the 1.5·2²³ shift
// (the integer lands in the low mantissa bits, read back as int), r reduced with ln2 split in two parts
// (exact products), exp(r) = 1 + r + r²·P(r) on |r| ≤ ln2/2, and 2ⁿ as two power-of-two factors so that
// results from denormal (x ≥ −104 after clamping) to +inf (x > 88.72) come out right. NaN propagates.
SIMVAE_INLINE float exp_f(float x) {
  const float clamped = select(x < -104.0f, -104.0f, select(x > 89.0f, 89.0f, x));
  const float shifter = 12582912.0f;  // 1.5 · 2^23
  const float shifted = clamped * 1.44269504088896341f + shifter;
  const float n = shifted - shifter;
  const int32_t n_int = float_to_bits(shifted) - float_to_bits(shifter);
  float r = clamped - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float exp_r = p * r * r + r + 1.0f;
  const int32_t half = n_int / 2;
  return exp_r * bits_to_float((half + 127) << 23) * bits_to_float((n_int - half + 127) << 23);
}

// log(x) in float for normal positive x (Cephes logf): x = m·2^e with m ∈ [√½, √2), log x = e·ln2 + log m,
// log(1 + f) = f − f²/2 + f³·P(f), ln2 split in two parts.
SIMVAE_INLINE float log_f(float x) {
  const int32_t bits = float_to_bits(x);
  const int32_t exponent = ((bits >> 23) & 0xff) - 126;  // x = m · 2^exponent, m ∈ [0.5, 1)
  const float m = bits_to_float((bits & 0x007fffff) | 0x3f000000);
  const bool below = m < 0.707106781186547524f;
  const float e = static_cast<float>(exponent - static_cast<int32_t>(below));
  const float f = select(below, m + m - 1.0f, m - 1.0f);
  const float f2 = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * f2;
  y += -2.12194440e-4f * e;
  y += -0.5f * f2;
  return f + y + 0.693359375f * e;
}

// cos(x) in float for 0 ≤ x < 2^16 (Cephes cosf): octant k = x·4/π rounded up to even, x − k·π/4 with π/4
// split in three parts (exact products), then ±cos or ±sin polynomial on [−π/4, π/4], chosen by selects.
SIMVAE_INLINE float cos_f(float x) {
  int32_t k = static_cast<int32_t>(x * 1.27323954473516f);
  k = (k + 1) & ~1;
  const float kf = static_cast<float>(k);
  const float r = ((x - kf * 0.78515625f) - kf * 2.4187564849853515625e-4f) - kf * 3.77489497744594108e-8f;
  const float r2 = r * r;
  const float cos_r = ((2.443315711809948e-5f * r2 - 1.388731625493765e-3f) * r2 + 4.166664568298827e-2f) * r2 * r2 -
                      0.5f * r2 + 1.0f;
  const float sin_r = ((-1.9515295891e-4f * r2 + 8.3321608736e-3f) * r2 - 1.6666654611e-1f) * r2 * r + r;
  const int32_t octant = k & 7;  // 0, 2, 4, 6: cos r, −sin r, −cos r, sin r
  const float value = select((octant & 2) != 0, sin_r, cos_r);
  return select(octant == 2 || octant == 4, -value, value);
}

// sqrt(a) for a > 0, correctly rounded (checked on 8M values in [0, 32] against std::sqrt), written out because
// std::sqrt sets errno (the build has no -fno-math-errno) and its errno branch stops vectorisation:
// y ≈ 1/√a from a bit-trick guess (≈3.5% off) and three division-free Newton steps y(3 − a·y²)/2,
// s = a·y (≈1 ulp), then one residual correction s + (a − s²)·y/2 with an exact fma residual.
SIMVAE_INLINE float sqrt_f(float a) {
  float y = bits_to_float(0x5f3759df - (float_to_bits(a) >> 1));
  y = y * (1.5f - 0.5f * a * y * y);
  y = y * (1.5f - 0.5f * a * y * y);
  y = y * (1.5f - 0.5f * a * y * y);
  const float s = a * y;
  return s + std::fma(-s, s, a) * (0.5f * y);
}

// tl.randn's Box-Muller, out[i] = sqrt(−2 log max(u1[i], 1e-7)) · cos(2π u2[i]) for i < n, in two steps:
// radius2_begin leaves −2 log max(u1, 1e-7) in radius2 and cos(2π u2) in out; radius2_end multiplies in the
// square root (the AVX2 path takes it with vsqrtps, which makes Box-Muller 1.6× faster; vsqrtps and sqrt_f
// are both correctly rounded, so the same bits).
SIMVAE_INLINE void radius2_begin(int64_t n, const float* u1, const float* u2, float* radius2, float* out) {
  for (int64_t i = 0; i < n; ++i) radius2[i] = -2.0f * log_f(select(u1[i] < kMinUniform, kMinUniform, u1[i]));
  for (int64_t i = 0; i < n; ++i) out[i] = cos_f(kTwoPiF * u2[i]);
}

SIMVAE_INLINE void radius2_end(int64_t begin, int64_t n, const float* radius2, float* out) {
  for (int64_t i = begin; i < n; ++i) out[i] *= sqrt_f(radius2[i]);
}

// out[i] = tl.randn(seed, counter0 + i) for i < n ≤ kChunk. Two versions under gcc's function
// multiversioning (the ifunc dispatch of target_clones, resolved once at load time): AVX2 Philox
// (philox_avx2.h) on blocks of 16 counters (then one of 8) where the CPU has AVX2 and FMA, the portable
// philox.h elsewhere; both produce the same uniforms, bit for bit (normals agree to fp32 rounding: the
// AVX2+FMA copy may contract the log/cos polynomials into FMAs).
#if SIMVAE_HAVE_TARGET_CLONES
__attribute__((target("default")))
#endif
void philox_normals(uint64_t seed, uint64_t counter0, int64_t n, float* out) {
  float u1[kChunk], u2[kChunk], radius2[kChunk];
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits0, bits1;
    philox_first_two(seed, counter0 + static_cast<uint64_t>(i), bits0, bits1);
    u1[i] = uint32_to_uniform(bits0);
    u2[i] = uint32_to_uniform(bits1);
  }
  radius2_begin(n, u1, u2, radius2, out);
  radius2_end(0, n, radius2, out);
}

#if SIMVAE_HAVE_TARGET_CLONES
__attribute__((target("avx2,fma"))) void philox_normals(uint64_t seed, uint64_t counter0, int64_t n, float* out) {
  alignas(32) float u1[kChunk], u2[kChunk], radius2[kChunk];
  const PhiloxKeys keys = philox_keys(seed);
  const int64_t blocks_end = n - n % 8;
  int64_t i = 0;
  for (; i + 16 <= blocks_end; i += 16) philox_uniforms<2>(keys, counter0 + static_cast<uint64_t>(i), u1 + i, u2 + i);
  if (i < blocks_end) philox_uniforms<1>(keys, counter0 + static_cast<uint64_t>(i), u1 + i, u2 + i);
  for (i = blocks_end; i < n; ++i) {
    uint32_t bits0, bits1;
    philox_first_two(seed, counter0 + static_cast<uint64_t>(i), bits0, bits1);
    u1[i] = uint32_to_uniform(bits0);
    u2[i] = uint32_to_uniform(bits1);
  }
  radius2_begin(n, u1, u2, radius2, out);
  for (int64_t i = 0; i < blocks_end; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), _mm256_sqrt_ps(_mm256_load_ps(radius2 + i))));
  }
  radius2_end(blocks_end, n, radius2, out);
}
#endif

SIMVAE_INLINE float exp_acc(float x) { return exp_f(x); }
SIMVAE_INLINE double exp_acc(double x) { return std::exp(x); }

template <typename acc_t>
struct Problem {
  int64_t views, dims;
  bool eps_given;
  uint64_t seed, offset;
  acc_t within, mean;  // log p = const − within·S_w − mean·M (latent_prior.h)
  bool grouped;
};

// A thread's scratch. Per chunk: t = std·ε and z of the J views (rows of kChunk) and z̄; per group: lane sums
// lanes_*[i] over the dims i, i + kChunk, … of every view, added up once per group (a horizontal sum per
// chunk and view costs as much as the chunk's arithmetic). Only `lanes` = min(kChunk, D) lanes are used.
// Nothing is zero-filled at construction: every element is written before it is read.
template <typename acc_t>
struct Scratch {
  Scratch(int64_t views, int64_t dims)
      : lanes(std::min(kChunk, dims)),
        buffer(new acc_t[2 * views * kChunk + 4 * kChunk]),
        t(buffer.get()),
        z(t + views * kChunk),
        zbar(z + views * kChunk),
        lanes_logvar(zbar + kChunk),
        lanes_within(lanes_logvar + kChunk),
        lanes_mean(lanes_within + kChunk) {}
  int64_t lanes;
  std::unique_ptr<acc_t[]> buffer;
  acc_t *t, *z, *zbar, *lanes_logvar, *lanes_within, *lanes_mean;
};

// x[0..kChunk) = 0 as a few vector stores: fully unrolled before gcc's loop distribution could turn it into a
// memset call or `rep stos` (whose start-up costs more than the stores here).
template <typename acc_t>
SIMVAE_INLINE void zero(acc_t* x) {
#pragma GCC unroll 64
  for (int64_t i = 0; i < kChunk; ++i) x[i] = 0;
}

template <typename acc_t>
SIMVAE_INLINE acc_t sum(int64_t n, const acc_t* x) {
  acc_t total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < n; ++i) total += x[i];
  return total;
}

// One view's row of a chunk, n values from element `first`, in one pass: t = exp(½ logvar)·ε, z = μ + t into
// the scratch row z_row and the z̄ sum zsum += z; then the forward adds lanes_logvar += logvar and writes
// z_out = z, the backward keeps t_row = t. `forward` is a compile-time choice: gcc if-converts a run-time one
// into masked stores, ≈ 10× slower on Zen 3. `noise` is ε at the row's start: the eps tensor, or the row's
// Philox normals.
template <bool forward, typename scalar_t, typename acc_t, typename noise_t>
SIMVAE_INLINE void sample_row(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                              const noise_t* __restrict__ noise, int64_t n, acc_t* __restrict__ t_row,
                              acc_t* __restrict__ z_row, acc_t* __restrict__ zsum, acc_t* __restrict__ lanes_logvar,
                              scalar_t* __restrict__ z_out) {
  for (int64_t i = 0; i < n; ++i) {
    const acc_t lv = static_cast<acc_t>(logvar[i]);
    const acc_t t = exp_acc(acc_t(0.5) * lv) * static_cast<acc_t>(noise[i]);
    const acc_t z = static_cast<acc_t>(mu[i]) + t;
    z_row[i] = z;
    zsum[i] += z;
    if constexpr (forward) {
      lanes_logvar[i] += lv;
      z_out[i] = static_cast<scalar_t>(z);
    } else {
      t_row[i] = t;
    }
  }
}

// The chunk's J rows (views) at dims [d0, d0 + n) of the group starting at `base`, z̄ sums into s.zbar.
template <bool forward, typename scalar_t, typename acc_t>
SIMVAE_INLINE void sample_chunk(const Problem<acc_t>& p, const scalar_t* mu, const scalar_t* logvar,
                                const scalar_t* eps, int64_t base, int64_t d0, int64_t n, float* normals,
                                Scratch<acc_t>& s, scalar_t* z_out) {
  zero(s.zbar);
  for (int64_t j = 0; j < p.views; ++j) {
    const int64_t first = base + j * p.dims + d0;
    scalar_t* out = z_out + first;
    acc_t *t_row = s.t + j * kChunk, *z_row = s.z + j * kChunk;
    if (p.eps_given) {
      sample_row<forward>(mu + first, logvar + first, eps + first, n, t_row, z_row, s.zbar, s.lanes_logvar, out);
    } else {
      // The row's cache lines are requested before its normals are made: the Philox loop is a few thousand
      // instructions with no loads, so the reads below would otherwise start only after it (4% faster here).
      for (int64_t i = 0; i < n; i += 64 / static_cast<int64_t>(sizeof(scalar_t))) {
        __builtin_prefetch(mu + first + i);
        __builtin_prefetch(logvar + first + i);
        if constexpr (forward) __builtin_prefetch(out + i, 1);
      }
      philox_normals(p.seed, p.offset + static_cast<uint64_t>(first), n, normals);
      sample_row<forward>(mu + first, logvar + first, normals, n, t_row, z_row, s.zbar, s.lanes_logvar, out);
    }
  }
}

// z̄ = zsum / J in place (grouped priors); 0 for standard, whose gradient −2·within·z_j is the grouped
// formula with z̄ = 0 and mean = 0.
template <typename acc_t>
SIMVAE_INLINE void finish_mean(const Problem<acc_t>& p, int64_t n, acc_t* zbar) {
  if (!p.grouped) return zero(zbar);
  const acc_t count = static_cast<acc_t>(p.views);
  for (int64_t i = 0; i < n; ++i) zbar[i] /= count;
}

// Per group: z_j written, S_w = Σ_j Σ_d (z_j − z̄)² from the scratch rows after z̄ is known (two passes over
// the chunk: stable), M = Σ_d z̄², Σ logvar, all as lane sums. Standard: z̄ = 0, so S_w = Σ_j ‖z_j‖², and
// mean = 0 (M unused).
template <typename scalar_t, typename acc_t>
SIMVAE_SIMD_CLONES void forward_groups(const Problem<acc_t>& p, const scalar_t* mu, const scalar_t* logvar,
                                       const scalar_t* eps, scalar_t* z_out, acc_t* log_prior, acc_t* entropy,
                                       acc_t log_prior_const, acc_t entropy_const, int64_t g_begin, int64_t g_end) {
  Scratch<acc_t> s(p.views, p.dims);
  float normals[kChunk];
  for (int64_t g = g_begin; g < g_end; ++g) {
    const int64_t base = g * p.views * p.dims;
    zero(s.lanes_logvar);
    zero(s.lanes_within);
    zero(s.lanes_mean);
    for (int64_t d0 = 0; d0 < p.dims; d0 += kChunk) {
      const int64_t n = std::min(kChunk, p.dims - d0);
      sample_chunk<true>(p, mu, logvar, eps, base, d0, n, normals, s, z_out);
      finish_mean(p, n, s.zbar);
      for (int64_t i = 0; i < n; ++i) s.lanes_mean[i] += s.zbar[i] * s.zbar[i];
      for (int64_t j = 0; j < p.views; ++j) {
        const acc_t* z_row = s.z + j * kChunk;
        for (int64_t i = 0; i < n; ++i) s.lanes_within[i] += (z_row[i] - s.zbar[i]) * (z_row[i] - s.zbar[i]);
      }
    }
    log_prior[g] = log_prior_const - p.within * sum(s.lanes, s.lanes_within) - p.mean * sum(s.lanes, s.lanes_mean);
    entropy[g] = entropy_const + acc_t(0.5) * sum(s.lanes, s.lanes_logvar);
  }
}

// dz_total = dz − a_dev·(z − z̄) − a_mean·z̄ and the two gradients of one view's row of n values.
template <typename scalar_t, typename acc_t>
SIMVAE_INLINE void emit_grads(acc_t z, acc_t t, acc_t zbar, scalar_t grad_z, acc_t a_dev, acc_t a_mean,
                              acc_t half_b, scalar_t& grad_mu, scalar_t& grad_logvar) {
  const acc_t total = static_cast<acc_t>(grad_z) - a_dev * (z - zbar) - a_mean * zbar;
  grad_mu = static_cast<scalar_t>(total);
  grad_logvar = static_cast<scalar_t>(acc_t(0.5) * total * t + half_b);
}

template <typename scalar_t, typename acc_t>
SIMVAE_SIMD_CLONES void backward_groups(const Problem<acc_t>& p, const scalar_t* grad_z, const acc_t* grad_log_prior,
                                        const acc_t* grad_entropy, const scalar_t* mu, const scalar_t* logvar,
                                        const scalar_t* eps, const scalar_t* saved_z, scalar_t* grad_mu,
                                        scalar_t* grad_logvar, int64_t g_begin, int64_t g_end) {
  Scratch<acc_t> s(p.views, p.dims);
  float normals[kChunk];
  for (int64_t g = g_begin; g < g_end; ++g) {
    const int64_t base = g * p.views * p.dims;
    const acc_t a = grad_log_prior[g], half_b = acc_t(0.5) * grad_entropy[g];
    // a·∂log p/∂z_j = −a_dev·(z_j − z̄) − a_mean·z̄   (a_dev = 2·within·a, a_mean = 2·mean·a/J)
    const acc_t a_dev = acc_t(2) * p.within * a, a_mean = acc_t(2) * p.mean * a / static_cast<acc_t>(p.views);
    for (int64_t d0 = 0; d0 < p.dims; d0 += kChunk) {
      const int64_t n = std::min(kChunk, p.dims - d0);
      if (saved_z != nullptr) {  // z̄ from the saved z, then per view z read again (from L1) and t = z − μ
        zero(s.zbar);
        for (int64_t j = 0; j < p.views; ++j) {
          const scalar_t* z_row = saved_z + base + j * p.dims + d0;
          for (int64_t i = 0; i < n; ++i) s.zbar[i] += static_cast<acc_t>(z_row[i]);
        }
        finish_mean(p, n, s.zbar);
        for (int64_t j = 0; j < p.views; ++j) {
          const int64_t first = base + j * p.dims + d0;
          for (int64_t i = 0; i < n; ++i) {
            const acc_t z = static_cast<acc_t>(saved_z[first + i]);
            emit_grads(z, z - static_cast<acc_t>(mu[first + i]), s.zbar[i], grad_z[first + i], a_dev, a_mean,
                       half_b, grad_mu[first + i], grad_logvar[first + i]);
          }
        }
      } else {  // z and t recomputed into the scratch rows
        sample_chunk<false>(p, mu, logvar, eps, base, d0, n, normals, s, grad_mu);  // grad_mu: not written
        finish_mean(p, n, s.zbar);
        for (int64_t j = 0; j < p.views; ++j) {
          const int64_t first = base + j * p.dims + d0;
          const acc_t *t_row = s.t + j * kChunk, *z_row = s.z + j * kChunk;
          for (int64_t i = 0; i < n; ++i) {
            emit_grads(z_row[i], t_row[i], s.zbar[i], grad_z[first + i], a_dev, a_mean, half_b, grad_mu[first + i],
                       grad_logvar[first + i]);
          }
        }
      }
    }
  }
}

template <typename acc_t>
Problem<acc_t> make_problem(const Tensor& mu, bool eps_given, int64_t seed, int64_t offset,
                            const LatentCoefficients& c) {
  return {mu.size(1),
          mu.size(2),
          eps_given,
          static_cast<uint64_t>(seed),
          static_cast<uint64_t>(offset),
          static_cast<acc_t>(c.within),
          static_cast<acc_t>(c.mean),
          c.grouped};
}

// f(begin, end) over the G groups in blocks of about 32k elements (small calls stay on one thread), handed out
// one at a time through an atomic counter inside torch's parallel_for. parallel_for alone gives each thread
// one fixed share, so a thread slowed by another process or by page faults holds up the whole call; here
// the other threads take its remaining blocks.
template <typename F>
void parallel_groups(const Tensor& mu, const F& f) {
  const int64_t groups = mu.size(0);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, mu.size(1) * mu.size(2)));
  const int64_t blocks = (groups + grain - 1) / grain;
  std::atomic<int64_t> next{0};
  torch::stable::parallel_for(0, blocks, 1, [&](int64_t, int64_t) {
    for (int64_t block = next++; block < blocks; block = next++) f(block * grain, std::min(groups, (block + 1) * grain));
  });
}

std::optional<Tensor> contiguous(const std::optional<Tensor>& t) {
  return t.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*t)) : std::nullopt;
}

template <typename T>
const T* data_or_null(const std::optional<Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

// [G] in the accumulation dtype on mu's device.
Tensor per_group(const Tensor& mu, Dtype dtype) {
  return torch::stable::empty({mu.size(0)}, accumulation_scalar_type(dtype), std::nullopt, mu.device());
}

std::tuple<Tensor, Tensor, Tensor> latent_forward_cpu(const Tensor& mu_in, const Tensor& logvar_in,
                                                      const std::optional<Tensor>& eps_in, int64_t seed,
                                                      int64_t offset, double sigma2, std::string_view prior_name) {
  const Checked checked = check_inputs(mu_in, logvar_in, eps_in, sigma2, prior_name);
  const Dtype dtype = dtype_of(mu_in.scalar_type(), "mu");
  const Tensor mu = torch::stable::contiguous(mu_in), logvar = torch::stable::contiguous(logvar_in);
  const std::optional<Tensor> eps = contiguous(eps_in);
  Tensor z = torch::stable::empty_like(mu), log_prior = per_group(mu, dtype), entropy = per_group(mu, dtype);
  dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    const Problem<acc_t> p = make_problem<acc_t>(mu, eps.has_value(), seed, offset, checked.coefficients);
    const scalar_t *mu_ptr = mu.const_data_ptr<scalar_t>(), *logvar_ptr = logvar.const_data_ptr<scalar_t>();
    const scalar_t* eps_ptr = data_or_null<scalar_t>(eps);
    scalar_t* z_ptr = z.mutable_data_ptr<scalar_t>();
    acc_t *log_prior_ptr = log_prior.mutable_data_ptr<acc_t>(), *entropy_ptr = entropy.mutable_data_ptr<acc_t>();
    parallel_groups(mu, [&](int64_t begin, int64_t end) {
      forward_groups<scalar_t, acc_t>(p, mu_ptr, logvar_ptr, eps_ptr, z_ptr, log_prior_ptr, entropy_ptr,
                                      static_cast<acc_t>(checked.coefficients.log_prior_const),
                                      static_cast<acc_t>(checked.coefficients.entropy_const), begin, end);
    });
  });
  return {z, log_prior, entropy};
}

std::tuple<Tensor, Tensor> latent_backward_cpu(const Tensor& grad_z_in, const Tensor& grad_log_prior_in,
                                               const Tensor& grad_entropy_in, const Tensor& mu_in,
                                               const Tensor& logvar_in, const std::optional<Tensor>& eps_in,
                                               const std::optional<Tensor>& z_in, int64_t seed, int64_t offset,
                                               double sigma2, std::string_view prior_name) {
  const Checked checked = check_inputs(mu_in, logvar_in, eps_in, sigma2, prior_name);
  check_saved_z(mu_in, z_in);
  check_upstream(mu_in, grad_z_in, grad_log_prior_in, grad_entropy_in);
  const Dtype dtype = dtype_of(mu_in.scalar_type(), "mu");
  const Tensor mu = torch::stable::contiguous(mu_in), logvar = torch::stable::contiguous(logvar_in);
  const std::optional<Tensor> eps = contiguous(eps_in), saved_z = contiguous(z_in);
  const Tensor grad_z = torch::stable::contiguous(torch::stable::to(grad_z_in, mu.scalar_type()));
  const Tensor grad_log_prior =
      torch::stable::contiguous(torch::stable::to(grad_log_prior_in, accumulation_scalar_type(dtype)));
  const Tensor grad_entropy =
      torch::stable::contiguous(torch::stable::to(grad_entropy_in, accumulation_scalar_type(dtype)));
  Tensor grad_mu = torch::stable::empty_like(mu), grad_logvar = torch::stable::empty_like(mu);
  dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = acc_type<scalar_t>;
    const Problem<acc_t> p = make_problem<acc_t>(mu, eps.has_value(), seed, offset, checked.coefficients);
    const scalar_t *grad_z_ptr = grad_z.const_data_ptr<scalar_t>(), *mu_ptr = mu.const_data_ptr<scalar_t>(),
                   *logvar_ptr = logvar.const_data_ptr<scalar_t>();
    const scalar_t *eps_ptr = data_or_null<scalar_t>(eps), *saved_z_ptr = data_or_null<scalar_t>(saved_z);
    const acc_t *grad_log_prior_ptr = grad_log_prior.const_data_ptr<acc_t>(),
                *grad_entropy_ptr = grad_entropy.const_data_ptr<acc_t>();
    scalar_t* grad_mu_ptr = grad_mu.mutable_data_ptr<scalar_t>();
    scalar_t* grad_logvar_ptr = grad_logvar.mutable_data_ptr<scalar_t>();
    parallel_groups(mu, [&](int64_t begin, int64_t end) {
      backward_groups<scalar_t, acc_t>(p, grad_z_ptr, grad_log_prior_ptr, grad_entropy_ptr, mu_ptr, logvar_ptr, eps_ptr,
                                       saved_z_ptr, grad_mu_ptr, grad_logvar_ptr, begin, end);
    });
  });
  return {grad_mu, grad_logvar};
}

}  // namespace
}  // namespace simvae

STABLE_TORCH_LIBRARY_IMPL(simvae_fast, CPU, m) {
  m.impl("latent_forward", TORCH_BOX(&simvae::latent_forward_cpu));
  m.impl("latent_backward", TORCH_BOX(&simvae::latent_backward_cpu));
}
