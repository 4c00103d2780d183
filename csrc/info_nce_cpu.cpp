// InfoNCE / NT-Xent over groups of views on the CPU, without any N x N buffer (math doc §4).
//
// z: [G, J, D] -> N = G*J rows z_i.  n_i = ||z_i||, c_i = 1/max(n_i, eps) with normalize (F.normalize,
// eps = 1e-12; a zero row stays zero), else c_i = 1.  u_i = c_i z_i, scale = 1/tau, and the logits are
//     s_ik = scale * c_i * c_k * (z_i . z_k),
// so the products run on z itself (no normalised copy) and the norms enter as row/column factors.
//
// Forward, per row:  lse_i = LSE_{k != i} s_ik  over row tiles: S = Z[I] Z^T into a preallocated [T, N]
// buffer (at::mm, BLAS), then per row a max pass and a sum-of-exp pass (stable for every tau and for
// unnormalised rows: exp(s - max) <= 1).  A NaN anywhere in a row's logits enters its sum and makes
// lse_i NaN.  Positives P(i) = the other J-1 views of i's group, O(N J D) apart from the tiles:
//     pos_i = (1/(J-1)) sum_p s_ip  ("mean")   or   LSE_p s_ip  ("logsumexp");   loss_i = lse_i - pos_i.
//
// Backward, with upstream weights w_i = dloss/dloss_i (any reduction): with P_ik = exp(s_ik - lse_i)
// (k != i), W_ip = 1/(J-1) or exp(s_ip - pos_i), G_ik = w_i (P_ik - W_ik):
//     dL/du_i   = scale * sum_k (G_ik + G_ki) u_k = scale * sum_k (G_ik + G_ki) c_k z_k
//     dL/dscale = sum_ik G_ik (u_i . u_k),          dL/dtau = -scale^2 dL/dscale
//     dL/dz_i   = c_i (dL/du_i - u_i (u_i . dL/du_i))  if n_i >= eps (normalize), c_i dL/du_i otherwise.
// s is symmetric, so one recomputed row tile S[I, :] gives both G_ik = w_i exp(s_ik - lse_i) and
// G_ki = w_k exp(s_ik - lse_k) (lse of every row is known): the row tile's M = (G + G^T)[I, :] * c_k
// becomes dL/du[I] / scale = M Z through one more at::mm, and every row of du is owned by one tile, so
// there are no races and no atomics (cost: 2 N^2 exps and 4 N^2 D flops).  The positive part of G + G^T
// (-w_i W_ip - w_p W_pi on the J-1 partners) is added per row afterwards.  Extra memory: the [T, N]
// tile, an fp32/fp64 copy of z only for half-precision inputs, du for half-precision inputs, O(N) vectors.
//
// Speed: with scalar std::exp the N^2 (forward) and 2 N^2 (backward) exps cost more than the BLAS products,
// so the per-row loops are explicit SIMD with a branch-free fp32 exp (fp64 keeps std::exp), compiled twice, for
// AVX2 + FMA and for the baseline, the loader picking the clone the CPU supports (target_clones).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kTileRows = 64;  // a [64, N] logits tile per thread: O(N * tile * threads) memory
constexpr double kNormEps = 1e-12;  // F.normalize's eps

at::ScalarType accumulation_type(const at::Tensor& z) {
  return z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_inputs(const at::Tensor& z, const at::Tensor& temperature) {
  TORCH_CHECK(z.dim() == 3 && z.size(1) >= 2, "info_nce: z must be [G, J >= 2, D], got ", z.sizes());
  TORCH_CHECK(temperature.dim() == 0, "info_nce: temperature must be a 0-dim tensor");
  TORCH_CHECK(temperature.scalar_type() == accumulation_type(z),
              "info_nce: temperature must have the accumulation dtype of z");
}

// z as a contiguous [N, D] matrix of the accumulation type (a view when it already is one).
at::Tensor rows_of(const at::Tensor& z) {
  // detach(): the tiles run on worker threads, outside the autograd-excluded dispatch of this op.
  return z.detach().reshape({z.size(0) * z.size(1), z.size(2)}).to(accumulation_type(z)).contiguous();
}

template <typename acc_t>
std::vector<acc_t> inverse_norms(const acc_t* z, int64_t N, int64_t D, bool normalize) {
  std::vector<acc_t> inv(N, acc_t(1));
  if (!normalize) return inv;
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      acc_t sq = 0;
      for (int64_t d = 0; d < D; ++d) sq += z[i * D + d] * z[i * D + d];
      inv[i] = acc_t(1) / std::max(std::sqrt(sq), acc_t(kNormEps));
    }
  });
  return inv;
}

template <typename acc_t>
acc_t dot(const acc_t* a, const acc_t* b, int64_t D) {
  acc_t s = 0;
  for (int64_t d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

// The row kernels are explicit SIMD over GCC/Clang vector types, so that the fp32 exp below runs eight
// lanes at a time (as plain loops, gcc 12 splits them on the exp's range clamp and vectorises nothing).
// fp32 works on f32x8 (AVX2 registers, or two SSE2 halves in the baseline clone); fp64 on one double per
// "vector", with std::exp, so the fp64 path stays exact.  Operators, comparisons and `mask ? a : b` act
// lane-wise on both.
// (-Wpsabi notes that f32x8 arguments change ABI between the clones; every such helper is inlined below.)
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef float f32x8_unaligned __attribute__((vector_size(32), aligned(4), may_alias));  // loads, stores

// Helpers taking or returning vectors are always inlined: called out of line from the AVX2 clone, a
// baseline-compiled helper would expect f32x8 arguments in memory, not in registers (a different ABI).
#define SIMD_INLINE __attribute__((always_inline)) inline

template <typename acc_t> struct Simd;
template <> struct Simd<float> { using type = f32x8; static constexpr int64_t lanes = 8; };
template <> struct Simd<double> { using type = double; static constexpr int64_t lanes = 1; };

SIMD_INLINE f32x8 splat(float v) { return f32x8{} + v; }
SIMD_INLINE float lane_sum(f32x8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
SIMD_INLINE double lane_sum(double v) { return v; }
SIMD_INLINE float lane_max(f32x8 v) {  // drops NaN lanes like std::max, which is all row_max needs
  float m = v[0];
  for (int j = 1; j < 8; ++j) m = std::max(m, v[j]);
  return m;
}
SIMD_INLINE double lane_max(double v) { return v; }

// v in lanes [0, n), other in the rest (the padding of a tail block).
SIMD_INLINE f32x8 first_lanes(f32x8 v, int64_t n, float other) {
  const i32x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return lane < static_cast<int32_t>(n) ? v : splat(other);
}
SIMD_INLINE double first_lanes(double v, int64_t, double) { return v; }

// p[0 .. n) into the first n lanes (n <= lanes), zeros into the others.
template <typename acc_t>
SIMD_INLINE typename Simd<acc_t>::type load(const acc_t* p, int64_t n) {
  using V = typename Simd<acc_t>::type;
  if constexpr (Simd<acc_t>::lanes == 1) {
    return *p;
  } else {
    if (n == Simd<acc_t>::lanes) return *reinterpret_cast<const f32x8_unaligned*>(p);
    V v = V{};
    for (int64_t j = 0; j < n; ++j) v[j] = p[j];
    return v;
  }
}

template <typename acc_t>
SIMD_INLINE void store(acc_t* p, typename Simd<acc_t>::type v, int64_t n) {
  if constexpr (Simd<acc_t>::lanes == 1) {
    *p = v;
  } else if (n == Simd<acc_t>::lanes) {
    *reinterpret_cast<f32x8_unaligned*>(p) = v;
  } else {
    for (int64_t j = 0; j < n; ++j) p[j] = v[j];
  }
}

// exp on eight floats, after Cephes' expf, without branches:
//   x = n ln2 + r,  n = round(x log2 e),  |r| <= ln2 / 2,  exp(x) = 2^n exp(r);
// r = x - n ln2_hi - n ln2_lo (Cody-Waite: ln2_hi has few mantissa bits, so n ln2_hi is exact for |n| < 2^9);
// exp(r) ~= 1 + r + r^2 (c2 + c3 r + ... + c7 r^5), Cephes' minimax coefficients: measured against glibc's
// expf, at most 1 ulp apart on [-87, 88.7] (steps of 7e-4), and equal at +-inf, NaN, +-1e30 and subnormals.
// round(y) for |y| < 2^22: t = y + 1.5 * 2^23 rounds to nearest even, and n = bits(t) - bits(1.5 * 2^23)
// exactly (t's exponent is fixed, so n sits in its low mantissa bits).
// x is clamped to [-104, 89] first: exp(-104) < 2^-150 and exp(89) > FLT_MAX, so the clamp changes no result,
// and n stays in [-151, 129]; 2^n is applied as 2^(n - h) * 2^h, h = floor(n / 2), each factor a normal float
// built in the exponent field ((k + 127) << 23), so results underflow gradually to 0 (exp(-inf) = 0) and
// overflow to +inf by themselves.  A NaN lane fails both clamp comparisons, stays NaN and comes out NaN.
SIMD_INLINE f32x8 exp_approx(f32x8 x) {
  const float kRound = 12582912.0f;  // 1.5 * 2^23
  f32x8 xc = x < splat(-104.0f) ? splat(-104.0f) : x;
  xc = xc > splat(89.0f) ? splat(89.0f) : xc;
  const f32x8 t = xc * 1.44269504088896341f + kRound;
  const f32x8 n = t - kRound;
  const f32x8 r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  f32x8 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const i32x8 n_int = __builtin_bit_cast(i32x8, t) - 0x4B400000;  // bits(1.5 * 2^23)
  const i32x8 h = n_int >> 1;
  const i32x8 lo_bits = (n_int - h + 127) << 23, hi_bits = (h + 127) << 23;
  return p * __builtin_bit_cast(f32x8, lo_bits) * __builtin_bit_cast(f32x8, hi_bits);
}
SIMD_INLINE double exp_approx(double x) { return std::exp(x); }

// The row kernels run over k in [k0, k1) (callers skip the diagonal with two calls), compiled for AVX2 + FMA
// and for the baseline.
#define SIMVAE_ROW_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))

// max_k s_ik with s_ik = a * inv[k] * S[k] (a = scale c_i).  NaNs may be dropped: the sum in row_sum_exp
// is NaN then anyway.
template <typename acc_t>
SIMVAE_ROW_KERNEL acc_t row_max(const acc_t* S, const acc_t* inv, acc_t a, int64_t k0, int64_t k1, acc_t m) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const acc_t ninf = -std::numeric_limits<acc_t>::infinity();
  V mv = V{} + ninf;
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    const V s = first_lanes(a * load(inv + k, n) * load(S + k, n), n, ninf);
    mv = mv < s ? s : mv;
  }
  return std::max(m, lane_max(mv));
}

// sum_k exp(s_ik - m).
template <typename acc_t>
SIMVAE_ROW_KERNEL acc_t row_sum_exp(const acc_t* S, const acc_t* inv, acc_t a, acc_t m, int64_t k0, int64_t k1,
                                    acc_t sum) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  V acc = V{};
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    acc += first_lanes(exp_approx(a * load(inv + k, n) * load(S + k, n) - m), n, acc_t(0));
  }
  return sum + lane_sum(acc);
}

// Backward, row i: M[k] <- (G_ik + G_ki) c_k from M[k] = z_i . z_k; returns sum_k G_ik (u_i . u_k).
template <typename acc_t>
SIMVAE_ROW_KERNEL acc_t row_grad(acc_t* M, const acc_t* inv, const acc_t* w, const acc_t* lse, acc_t c_i,
                                 acc_t w_i, acc_t lse_i, acc_t scale, int64_t k0, int64_t k1, acc_t ds) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  V acc = V{};
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    const V c = load(inv + k, n);
    const V uu = c_i * c * load(M + k, n);  // u_i . u_k
    const V g_ik = w_i * exp_approx(scale * uu - lse_i);
    const V g_ki = load(w + k, n) * exp_approx(scale * uu - load(lse + k, n));
    acc += first_lanes(g_ik * uu, n, acc_t(0));
    store(M + k, (g_ik + g_ki) * c, n);
  }
  return ds + lane_sum(acc);
}

// Calls body(i0, rows, S) for each row tile, S = Z[i0 : i0 + rows] Z^T as a [rows, N] tensor (row-major).
// Tiles are spread over the threads, each with its own [T, N] buffer; body runs single-threaded, and so
// does the at::mm inside a parallel region (small-M BLAS calls scale badly across threads).
template <typename Body>
void for_each_row_tile(const at::Tensor& zr, Body body) {
  const int64_t N = zr.size(0);
  const int64_t tile = std::min(kTileRows, N);
  const int64_t tiles = (N + tile - 1) / tile;
  at::parallel_for(0, tiles, 1, [&](int64_t t_begin, int64_t t_end) {
    at::Tensor buffer = at::empty({tile, N}, zr.options());
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t i0 = t * tile, rows = std::min(tile, N - i0);
      at::Tensor S = buffer.narrow(0, 0, rows);
      at::mm_out(S, zr.narrow(0, i0, rows), zr.t());
      body(i0, rows, S);
    }
  });
}

template <typename acc_t>
void forward_impl(const at::Tensor& zr, int64_t J, acc_t scale, bool normalize, bool positives_lse,
                  acc_t* loss, acc_t* lse, acc_t* pos) {
  const int64_t N = zr.size(0), D = zr.size(1);
  const acc_t* z = zr.data_ptr<acc_t>();
  const std::vector<acc_t> inv = inverse_norms(z, N, D, normalize);

  for_each_row_tile(zr, [&](int64_t i0, int64_t rows, const at::Tensor& S_tile) {
    const acc_t* S = S_tile.data_ptr<acc_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      const acc_t* Si = S + r * N;
      const acc_t* c = inv.data();
      const acc_t a = scale * inv[i];
      acc_t m = row_max(Si, c, a, 0, i, -std::numeric_limits<acc_t>::infinity());
      m = row_max(Si, c, a, i + 1, N, m);
      acc_t sum = row_sum_exp(Si, c, a, m, 0, i, acc_t(0));  // a NaN logit (NaN in z) makes lse_i NaN
      sum = row_sum_exp(Si, c, a, m, i + 1, N, sum);
      lse[i] = m + std::log(sum);
    }
  });

  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g0 = (i / J) * J;
      acc_t m = -std::numeric_limits<acc_t>::infinity(), total = 0;
      for (int64_t p = g0; p < g0 + J; ++p) {
        if (p == i) continue;
        const acc_t s = scale * inv[i] * inv[p] * dot(z + i * D, z + p * D, D);
        total += s;
        m = std::max(m, s);
      }
      if (positives_lse) {
        acc_t sum = total - total;  // 0, or NaN when a positive logit is NaN
        for (int64_t p = g0; p < g0 + J; ++p)
          if (p != i) sum += std::exp(scale * inv[i] * inv[p] * dot(z + i * D, z + p * D, D) - m);
        pos[i] = m + std::log(sum);
      } else {
        pos[i] = total / acc_t(J - 1);
      }
      loss[i] = lse[i] - pos[i];
    }
  });
}

// Writes dL/dz (accumulation type, [N, D]) into dz and returns dL/dscale.
template <typename acc_t>
acc_t backward_impl(const at::Tensor& zr, int64_t J, acc_t scale, bool normalize, bool positives_lse,
                    const acc_t* w, const acc_t* lse, const acc_t* pos, const at::Tensor& dz_t) {
  const int64_t N = zr.size(0), D = zr.size(1);
  const acc_t* z = zr.data_ptr<acc_t>();
  acc_t* dz = dz_t.data_ptr<acc_t>();
  const std::vector<acc_t> inv = inverse_norms(z, N, D, normalize);
  std::vector<acc_t> row_dscale(N, acc_t(0));  // per-row parts of dL/dscale, summed in order at the end

  // dz[I] <- (G + G^T)[I, :] diag(c) Z  (the negatives' part of dL/du / scale).
  for_each_row_tile(zr, [&](int64_t i0, int64_t rows, const at::Tensor& S_tile) {
    acc_t* M = S_tile.data_ptr<acc_t>();  // S overwritten in place by M = (G + G^T) c_k
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      acc_t* Mi = M + r * N;
      const acc_t ds = row_grad(Mi, inv.data(), w, lse, inv[i], w[i], lse[i], scale, 0, i, acc_t(0));
      row_dscale[i] = row_grad(Mi, inv.data(), w, lse, inv[i], w[i], lse[i], scale, i + 1, N, ds);
      Mi[i] = 0;
    }
    at::Tensor out = dz_t.narrow(0, i0, rows);
    at::mm_out(out, S_tile, zr);
  });

  // Per row: subtract the positives' part, scale, and project through the normalisation.
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g0 = (i / J) * J;
      const acc_t* zi = z + i * D;
      acc_t* di = dz + i * D;
      for (int64_t p = g0; p < g0 + J; ++p) {
        if (p == i) continue;
        const acc_t uu = inv[i] * inv[p] * dot(zi, z + p * D, D);
        const acc_t w_ip = positives_lse ? std::exp(scale * uu - pos[i]) : acc_t(1) / acc_t(J - 1);
        const acc_t w_pi = positives_lse ? std::exp(scale * uu - pos[p]) : acc_t(1) / acc_t(J - 1);
        const acc_t coeff = (w[i] * w_ip + w[p] * w_pi) * inv[p];
        row_dscale[i] -= w[i] * w_ip * uu;
        for (int64_t d = 0; d < D; ++d) di[d] -= coeff * z[p * D + d];
      }
      for (int64_t d = 0; d < D; ++d) di[d] *= scale;
      if (!normalize) continue;
      const acc_t c = inv[i];
      if (c < acc_t(1) / acc_t(kNormEps)) {  // ||z_i|| > eps: (u_i . du_i) u_i = c^2 (z_i . du_i) z_i
        const acc_t proj = c * c * dot(zi, di, D);
        for (int64_t d = 0; d < D; ++d) di[d] -= proj * zi[d];
      }
      for (int64_t d = 0; d < D; ++d) di[d] *= c;
    }
  });
  acc_t dscale = 0;
  for (int64_t i = 0; i < N; ++i) dscale += row_dscale[i];
  return dscale;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_forward_cpu(const at::Tensor& z,
                                                                     const at::Tensor& temperature,
                                                                     bool normalize, bool positives_logsumexp) {
  check_inputs(z, temperature);
  const at::Tensor zr = rows_of(z);
  const int64_t N = zr.size(0);
  at::Tensor loss = at::empty({N}, zr.options());
  at::Tensor lse = at::empty({N}, zr.options());
  at::Tensor pos = at::empty({N}, zr.options());
  AT_DISPATCH_FLOATING_TYPES(zr.scalar_type(), "info_nce_forward_cpu", [&] {
    const scalar_t scale = scalar_t(1) / temperature.item<scalar_t>();
    forward_impl<scalar_t>(zr, z.size(1), scale, normalize, positives_logsumexp, loss.data_ptr<scalar_t>(),
                           lse.data_ptr<scalar_t>(), pos.data_ptr<scalar_t>());
  });
  return {loss, lse, pos};
}

std::tuple<at::Tensor, at::Tensor> info_nce_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& z,
                                                         const at::Tensor& temperature, const at::Tensor& lse,
                                                         const at::Tensor& pos, bool normalize,
                                                         bool positives_logsumexp) {
  check_inputs(z, temperature);
  const at::Tensor zr = rows_of(z);
  const at::Tensor w = grad_loss.to(zr.scalar_type()).contiguous();
  const at::Tensor lse_c = lse.contiguous(), pos_c = pos.contiguous();
  at::Tensor dz = at::empty(zr.sizes(), zr.options());
  at::Tensor dtemp = at::empty({}, temperature.options());
  AT_DISPATCH_FLOATING_TYPES(zr.scalar_type(), "info_nce_backward_cpu", [&] {
    const scalar_t tau = temperature.item<scalar_t>();
    const scalar_t scale = scalar_t(1) / tau;
    const scalar_t dscale =
        backward_impl<scalar_t>(zr, z.size(1), scale, normalize, positives_logsumexp, w.data_ptr<scalar_t>(),
                                lse_c.data_ptr<scalar_t>(), pos_c.data_ptr<scalar_t>(), dz);
    dtemp.fill_(-dscale * scale * scale);
  });
  return {dz.view(z.sizes()).to(z.scalar_type()), dtemp};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(simvae_fast, m) {
  m.def(
      "info_nce_forward(Tensor z, Tensor temperature, bool normalize, bool positives_logsumexp) "
      "-> (Tensor loss, Tensor lse, Tensor positive)");
  m.def(
      "info_nce_backward(Tensor grad_loss, Tensor z, Tensor temperature, Tensor lse, Tensor positive, "
      "bool normalize, bool positives_logsumexp) -> (Tensor grad_z, Tensor grad_temperature)");
}

TORCH_LIBRARY_IMPL(simvae_fast, CPU, m) {
  m.impl("info_nce_forward", &info_nce_forward_cpu);
  m.impl("info_nce_backward", &info_nce_backward_cpu);
}
