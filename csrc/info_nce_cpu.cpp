// InfoNCE / NT-Xent over groups of views on the CPU: each pair of rows multiplied once, no N x N buffer
// (docs/math.md §4): the symmetric tiles of §4.1, variant "one shared shift" with "rounds of disjoint pairs".
//
// z: [G, J, D] -> N = G*J rows z_i.  c_i = 1/max(||z_i||, eps) with normalize (F.normalize, eps = 1e-12; a zero
// row stays zero), else c_i = 1.  u_i = c_i z_i (U: one [N, D] copy, none for unnormalised fp32/fp64), scale =
// 1/tau, logits s_ik = scale (u_i . u_k), lse_i = LSE_{k != i} s_ik.  Positives P(i) = the other J-1 views of
// i's group, O(N J D) in a per-row pass:  pos_i = (1/(J-1)) sum_p s_ip ("mean") or LSE_p s_ip ("logsumexp");
// loss_i = lse_i - pos_i.
//
// Forward.  s_ik = s_ki, so the N^2 logits come from the upper triangle alone.  Rows are cut into blocks of B
// rows (B <= 512) and blocks into tiles of T = 128 rows.  For a tile of rows I and a block of columns K one BLAS
// product gives S = scale U_I U_K^T ([T, B]); S updates the running (max m, sum of exp l) of the rows of I
// (over the columns of K) and of the rows of K (over the rows of I).  Every pair of blocks a <= c is visited
// once; for a = c the tile's columns start at its own first row and its [T, T] diagonal square updates its
// rows only, over both triangles (k != i), so that every ordered pair is counted exactly once.
// One exp per logit for both sides: with the tile's largest logit t,
//     e_ik = exp(s_ik - t),  row part (t, sum_k e_ik),  column part (t, sum_i e_ik),
// merged into the running pairs by  m' = max(m, t),  l' = l e^{m - m'} + l_t e^{t - m'}.  This is exact to
// rounding while every row's and column's maximum in the tile is within kSpread of t (each one's largest term
// is then >= e^-kSpread, far above the smallest normal number, so no term that matters underflows; always so
// with normalize and tau >= 2/kSpread).  A tile with a wider spread (tau = 0.01 between clusters, unnormalised
// rows of very different norms) shifts its rows by their own maxima and its columns by theirs: two exps per
// logit, equally exact.  The maxima are NaN-sticky, so a NaN logit makes every lse whose sum contains it NaN.
//
// Backward, with upstream weights w_i = dloss/dloss_i (any reduction): P_ik = exp(s_ik - lse_i) (k != i),
// W_ip = 1/(J-1) or exp(s_ip - pos_i), G_ik = w_i (P_ik - W_ik):
//     dL/du_i   = scale sum_k M_ik u_k,   M = G + G^T (symmetric),
//     dL/dscale = sum_ik G_ik (u_i . u_k),   dL/dtau = -scale^2 dL/dscale,
//     dL/dz_i   = c_i (dL/du_i - u_i (u_i . dL/du_i))  if ||z_i|| > eps (normalize), c_i dL/du_i otherwise.
// The same tiles recompute S = scale U_I U_K^T; on S, M's negative part M_ik = w_i e^{s_ik - lse_i} +
// w_k e^{s_ik - lse_k} (lse of every row is saved) overwrites S, and two more BLAS products give
//     dU_I += M U_K  (rows),   dU_K += M^T U_I  (columns; not for the diagonal square, whose rows take both
// triangles).  dL/dscale gathers M_ik (u_i . u_k) per pair (g_ik (u_i . u_k) per ordered pair in the square).
// The positive part of M (-w_i W_ip - w_p W_pi on the J-1 partners) is subtracted in the per-row pass.
//
// Counts (N rows, D dims; B, T << N): forward N^2 D FLOPs (one [T, D] x [D, B] product per tile) and N^2/2 exps;
// backward 3 N^2 D FLOPs (the recomputed tile, M U_K and M^T U_I) and N^2 exps; in all 4 N^2 D FLOPs and
// 1.5 N^2 exps, against 6 N^2 D and 3 N^2 when every row streams every column.  Extra terms: the diagonal
// squares (N T D FLOPs per product), the merges (2 N^2 (1/T + 1/B) exps), the wide-spread tiles' second exp.
//
// No races, same result on every run and for every thread count: a block pair writes the running (m, l), dU
// and the dL/dscale parts of the rows of its two blocks only.  The pairs run in rounds in which no two pairs
// share a block: first the diagonal pairs (a, a), then blocks-1 rounds of disjoint pairs (the round-robin
// "circle" schedule).  Rounds run one after the other and a round's pairs are handed to the threads through an
// atomic counter (within a round, a thread slowed by another process leaves its share to the others), so every
// row's updates come in the same order whatever thread ran them; B depends on N only.  The BLAS calls inside
// run single-threaded.  (Tried: no barriers, a pair waiting only for the earlier pairs on its blocks, by
// spinning or sleeping; no faster here, on a loaded machine: not kept.)
// Extra memory: U (and an fp32 copy of half-precision z), dU for half-precision z, per thread one [T, B] tile,
// O(N) vectors: O(N D + T B threads).
//
// Speed: the per-row loops are explicit SIMD with a branch-free fp32 exp (fp64 keeps std::exp), compiled twice,
// for AVX2 + FMA and for the baseline, the loader picking the clone the CPU supports (target_clones).
#include <torch/csrc/inductor/aoti_torch/generated/c_shim_cpu.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "info_nce_op_checks.h"
#include "op_common.h"
#include "target_clones.h"

namespace simvae {
namespace {

using torch::stable::Tensor;

constexpr int64_t kTileRows = 128;   // T: rows of a logits tile
constexpr int64_t kBlockRows = 512;  // the largest B (a multiple of T); a tile is [T, B] at most
constexpr int64_t kBlocksWanted = 16;  // smaller N: smaller blocks, so that every round has pairs for the threads
constexpr double kNormEps = 1e-12;   // F.normalize's eps

template <typename acc_t> constexpr acc_t kSpread = 64;  // e^-64 ~ 1.6e-28 >> FLT_MIN / FLT_EPSILON ~ 2e-31
template <> constexpr double kSpread<double> = 512;     // e^-512 ~ 4e-223 >> DBL_MIN / DBL_EPSILON ~ 1e-292

// A BLAS product on the CPU through torch's C shims (stable across torch versions, like the rest of this file):
// out = a b, or out += a b (out may be a view; beta = 1 reads it first). They call ATen's CPU kernels directly,
// without the dispatcher, so calls from the worker threads below never meet autograd.
void mm_out(const Tensor& out, const Tensor& a, const Tensor& b) {
  TORCH_ERROR_CODE_CHECK(aoti_torch_cpu_mm_out(out.get(), a.get(), b.get()));
}

void addmm_(const Tensor& out, const Tensor& a, const Tensor& b) {
  TORCH_ERROR_CODE_CHECK(aoti_torch_cpu_addmm_out(out.get(), out.get(), a.get(), b.get(), 1.0, 1.0));
}

// z as a contiguous [N, D] matrix of the accumulation type (a view when it already is one).
Tensor rows_of(const Tensor& z, torch::headeronly::ScalarType acc) {
  // detach: the tiles run on worker threads, outside the autograd-excluded dispatch of this op.
  std::array<StableIValue, 1> stack{torch::stable::detail::from(z)};
  TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::detach", "", stack.data(), TORCH_ABI_VERSION));
  const Tensor detached = torch::stable::detail::to<Tensor>(stack[0]);
  const Tensor flat = torch::stable::reshape(detached, {z.size(0) * z.size(1), z.size(2)});
  return torch::stable::contiguous(torch::stable::to(flat, acc));
}

template <typename acc_t>
acc_t dot(const acc_t* a, const acc_t* b, int64_t D) {
  acc_t s = 0;
  for (int64_t d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

// U = diag(c) Z (zr itself without normalize) and c.
template <typename acc_t>
Tensor unit_rows(const Tensor& zr, bool normalize, std::vector<acc_t>& inv) {
  const int64_t N = zr.size(0), D = zr.size(1);
  inv.assign(N, acc_t(1));
  if (!normalize) return zr;
  Tensor U = torch::stable::empty_like(zr);
  const acc_t* z = zr.const_data_ptr<acc_t>();
  acc_t* u = U.mutable_data_ptr<acc_t>();
  torch::stable::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const acc_t* zi = z + i * D;
      inv[i] = acc_t(1) / std::max(std::sqrt(dot(zi, zi, D)), acc_t(kNormEps));
      for (int64_t d = 0; d < D; ++d) u[i * D + d] = inv[i] * zi[d];
    }
  });
  return U;
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

// Helpers taking or returning vectors are SIMVAE_INLINE (always inlined): called out of line from the AVX2
// clone, a baseline-compiled helper would expect f32x8 arguments in memory, not in registers (a different ABI).

template <typename acc_t> struct Simd;
template <> struct Simd<float> { using type = f32x8; static constexpr int64_t lanes = 8; };
template <> struct Simd<double> { using type = double; static constexpr int64_t lanes = 1; };

SIMVAE_INLINE f32x8 splat(float v) { return f32x8{} + v; }
SIMVAE_INLINE float lane_sum(f32x8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
SIMVAE_INLINE double lane_sum(double v) { return v; }

// max(a, b) that keeps a NaN of either side (a NaN in a stays: b > NaN and b != b are both false).
template <typename V>
SIMVAE_INLINE V sticky_max(V a, V b) {
  return (b > a) | (b != b) ? b : a;
}
SIMVAE_INLINE float lane_max(f32x8 v) {
  float m = v[0];
  for (int j = 1; j < 8; ++j) m = sticky_max(m, v[j]);
  return m;
}
SIMVAE_INLINE double lane_max(double v) { return v; }

// v in lanes [0, n), other in the rest (the padding of a tail block).
SIMVAE_INLINE f32x8 first_lanes(f32x8 v, int64_t n, float other) {
  const i32x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return lane < static_cast<int32_t>(n) ? v : splat(other);
}
SIMVAE_INLINE double first_lanes(double v, int64_t, double) { return v; }

// p[0 .. n) into the first n lanes (n <= lanes), zeros into the others.
template <typename acc_t>
SIMVAE_INLINE typename Simd<acc_t>::type load(const acc_t* p, int64_t n) {
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
SIMVAE_INLINE void store(acc_t* p, typename Simd<acc_t>::type v, int64_t n) {
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
SIMVAE_INLINE f32x8 exp_approx(f32x8 x) {
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
SIMVAE_INLINE double exp_approx(double x) { return std::exp(x); }

// The row kernels run over the columns [k0, k1) of one row of a tile (callers skip the diagonal with two
// calls), compiled for AVX2 + FMA and for the baseline where the compiler supports it (target_clones.h).

// Forward, first pass: returns max(m, max_k s_k), s_k = scale S[k] (NaN-sticky); kColumns: also
// col_max[k] = max(col_max[k], s_k).
template <bool kColumns, typename acc_t>
SIMVAE_SIMD_CLONES acc_t logit_max(const acc_t* S, acc_t scale, int64_t k0, int64_t k1, acc_t* col_max, acc_t m) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const acc_t ninf = -std::numeric_limits<acc_t>::infinity();
  V mv = V{} + ninf;
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    const V s = first_lanes(scale * load(S + k, n), n, ninf);
    mv = sticky_max(mv, s);
    if constexpr (kColumns) store(col_max + k, sticky_max(load(col_max + k, n), s), n);
  }
  return sticky_max(m, lane_max(mv));
}

// Forward, second pass: returns sum + sum_k e_k, e_k = exp(scale S[k] - shift); kColumns: also col_sum[k] += e_k.
template <bool kColumns, typename acc_t>
SIMVAE_SIMD_CLONES acc_t logit_sum_exp(const acc_t* S, acc_t scale, acc_t shift, int64_t k0, int64_t k1,
                                      acc_t* col_sum, acc_t sum) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  V acc = V{};
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    const V e = first_lanes(exp_approx(scale * load(S + k, n) - shift), n, acc_t(0));
    acc += e;
    if constexpr (kColumns) store(col_sum + k, load(col_sum + k, n) + e, n);
  }
  return sum + lane_sum(acc);
}

// Forward, second pass of a wide-spread tile, the columns' side: col_sum[k] += exp(scale S[k] - col_max[k]).
template <typename acc_t>
SIMVAE_SIMD_CLONES void column_sum_exp(const acc_t* S, acc_t scale, const acc_t* col_max, int64_t k0, int64_t k1,
                                      acc_t* col_sum) {
  constexpr int64_t L = Simd<acc_t>::lanes;
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    store(col_sum + k, load(col_sum + k, n) + exp_approx(scale * load(S + k, n) - load(col_max + k, n)), n);
  }
}

// (m[j], l[j]) <- (m[j], l[j]) merged with (m2[j], l2[j]) for j < n: m' = max(m, m2) (NaN-sticky),
// l' = l e^{m - m'} + l2 e^{m2 - m'}; a part with m2 = -inf (every logit -inf) is empty and leaves the pair.
template <typename acc_t>
SIMVAE_SIMD_CLONES void merge_lse(acc_t* m, acc_t* l, const acc_t* m2, const acc_t* l2, int64_t n_total) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const V ninf = V{} - std::numeric_limits<acc_t>::infinity();
  for (int64_t j = 0; j < n_total; j += L) {
    const int64_t n = std::min(L, n_total - j);
    const V mo = load(m + j, n), lo = load(l + j, n), mp = load(m2 + j, n), lp = load(l2 + j, n);
    const V mn = sticky_max(mo, mp);
    const V ln = lo * exp_approx(mo - mn) + lp * exp_approx(mp - mn);
    store(m + j, mp == ninf ? mo : mn, n);
    store(l + j, mp == ninf ? lo : ln, n);
  }
}

// Backward, one row i of a tile: S[k] = u_i . u_k  <-  M_ik = g_ik + g_ki, g_ik = w_i exp(scale S[k] - lse_i),
// g_ki = w[k] exp(scale S[k] - lse[k]); returns ds + sum_k M_ik S[k] (kPairs: each unordered pair once) or
// ds + sum_k g_ik S[k] (each ordered pair in its row, for the diagonal square).
template <bool kPairs, typename acc_t>
SIMVAE_SIMD_CLONES acc_t pair_grad(acc_t* S, const acc_t* w, const acc_t* lse, acc_t w_i, acc_t lse_i, acc_t scale,
                                  int64_t k0, int64_t k1, acc_t ds) {
  using V = typename Simd<acc_t>::type;
  constexpr int64_t L = Simd<acc_t>::lanes;
  V acc = V{};
  for (int64_t k = k0; k < k1; k += L) {
    const int64_t n = std::min(L, k1 - k);
    const V uu = load(S + k, n);
    const V g_ik = w_i * exp_approx(scale * uu - lse_i);
    const V g_ki = load(w + k, n) * exp_approx(scale * uu - load(lse + k, n));
    acc += first_lanes((kPairs ? g_ik + g_ki : g_ik) * uu, n, acc_t(0));
    store(S + k, g_ik + g_ki, n);
  }
  return ds + lane_sum(acc);
}

// Rows per block: about N / kBlocksWanted, a multiple of T, at most kBlockRows.  Depends on N only.
int64_t block_rows(int64_t N) {
  const int64_t want = (N + kBlocksWanted - 1) / kBlocksWanted;
  return std::min(kBlockRows, std::max(kTileRows, (want + kTileRows - 1) / kTileRows * kTileRows));
}

// Calls work(a, c, buffer) once for every pair of blocks a <= c, in rounds of pairs that share no block (see the
// header): the diagonal pairs, then the circle schedule over an even number of slots (a slot past the last
// block is a bye).  buffer: per thread, (kTileRows + 2) * kBlockRows + 2 * kTileRows elements of `options`.
template <typename Work>
void for_each_block_pair(int64_t blocks, torch::headeronly::ScalarType dtype, const Work& work) {
  std::vector<std::pair<int64_t, int64_t>> round;
  const auto run_round = [&] {
    const int64_t pairs = static_cast<int64_t>(round.size());
    std::atomic<int64_t> next{0};
    torch::stable::parallel_for(0, pairs, 1, [&](int64_t, int64_t) {
      const Tensor buffer = torch::stable::empty({(kTileRows + 2) * kBlockRows + 2 * kTileRows}, dtype);
      for (int64_t j = next++; j < pairs; j = next++) work(round[j].first, round[j].second, buffer);
    });
  };
  for (int64_t a = 0; a < blocks; ++a) round.emplace_back(a, a);
  run_round();
  const int64_t slots = blocks + (blocks & 1), turning = slots - 1;
  for (int64_t r = 0; r + 1 < slots; ++r) {
    round.clear();
    const auto add = [&](int64_t a, int64_t c) {
      if (a < blocks && c < blocks) round.emplace_back(std::min(a, c), std::max(a, c));
    };
    add(r, turning);
    for (int64_t i = 1; i < slots / 2; ++i) add((r + i) % turning, (r - i + turning) % turning);
    run_round();
  }
}

// The tiles of block pair (a, c): tile(i0, rows, k0, cols, diagonal) for each tile of rows of block a, columns
// [k0, k0 + cols) = block c, or for a = c the rest of the block from the tile's first row (the first `rows`
// columns then are the tile's diagonal square).
template <typename Tile>
void for_each_tile(int64_t N, int64_t block, int64_t a, int64_t c, const Tile& tile) {
  const int64_t a_end = std::min(N, (a + 1) * block), c_end = std::min(N, (c + 1) * block);
  for (int64_t i0 = a * block; i0 < a_end; i0 += kTileRows) {
    const int64_t rows = std::min(kTileRows, a_end - i0);
    const int64_t k0 = a == c ? i0 : c * block;
    tile(i0, rows, k0, c_end - k0, a == c);
  }
}

// S = U[i0 : i0 + rows] U[k0 : k0 + cols]^T into the front of buffer, as a contiguous [rows, cols] tensor.
Tensor tile_products(Tensor U, Tensor buffer, int64_t i0, int64_t rows, int64_t k0, int64_t cols) {
  const Tensor S = torch::stable::view(torch::stable::narrow(buffer, 0, 0, rows * cols), {rows, cols});
  mm_out(S, torch::stable::narrow(U, 0, i0, rows), torch::stable::transpose(torch::stable::narrow(U, 0, k0, cols), 0, 1));
  return S;
}

// Forward of one tile S (rows x cols, u_i . u_k): merges its row and column parts into (m, l).
template <typename acc_t>
void forward_tile(const acc_t* S, int64_t rows, int64_t cols, bool diagonal, acc_t scale, int64_t i0, int64_t k0,
                  acc_t* m, acc_t* l, acc_t* scratch) {
  constexpr acc_t ninf = -std::numeric_limits<acc_t>::infinity();
  const int64_t sq = diagonal ? rows : 0;  // columns [sq, cols) are the symmetric part
  acc_t* col_max = scratch;
  acc_t* col_sum = col_max + kBlockRows;
  acc_t* row_max = col_sum + kBlockRows;
  acc_t* row_sum = row_max + kTileRows;
  std::fill(col_max + sq, col_max + cols, ninf);
  std::fill(col_sum + sq, col_sum + cols, acc_t(0));
  acc_t tile_max = ninf;
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* Sr = S + r * cols;
    acc_t mx = diagonal ? logit_max<false>(Sr, scale, r + 1, sq, col_max, logit_max<false>(Sr, scale, 0, r, col_max, ninf))
                        : ninf;
    row_max[r] = logit_max<true>(Sr, scale, sq, cols, col_max, mx);
    tile_max = sticky_max(tile_max, row_max[r]);
  }
  if (tile_max == ninf) return;  // no logit but -inf (a 1 x 1 diagonal tile): nothing to add
  bool one_shift = true;
  for (int64_t r = 0; r < rows; ++r) one_shift &= !(row_max[r] < tile_max - kSpread<acc_t>);
  for (int64_t k = sq; k < cols; ++k) one_shift &= !(col_max[k] < tile_max - kSpread<acc_t>);
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* Sr = S + r * cols;
    const acc_t shift = one_shift ? tile_max : row_max[r];
    acc_t sum = 0;
    if (shift != ninf) {
      if (diagonal) sum = logit_sum_exp<false>(Sr, scale, shift, r + 1, sq, col_sum,
                                               logit_sum_exp<false>(Sr, scale, shift, 0, r, col_sum, sum));
      if (one_shift) {
        sum = logit_sum_exp<true>(Sr, scale, shift, sq, cols, col_sum, sum);
      } else {
        sum = logit_sum_exp<false>(Sr, scale, shift, sq, cols, col_sum, sum);
        column_sum_exp(Sr, scale, col_max, sq, cols, col_sum);
      }
    }
    row_sum[r] = sum;
  }
  if (one_shift) {
    std::fill(row_max, row_max + rows, tile_max);
    std::fill(col_max + sq, col_max + cols, tile_max);
  }
  merge_lse(m + i0, l + i0, row_max, row_sum, rows);
  merge_lse(m + k0 + sq, l + k0 + sq, col_max + sq, col_sum + sq, cols - sq);
}

template <typename acc_t>
void forward_impl(const Tensor& U, int64_t J, acc_t scale, bool positives_lse, acc_t* loss, acc_t* lse,
                  acc_t* pos) {
  const int64_t N = U.size(0), D = U.size(1), block = block_rows(N);
  const acc_t* u = U.const_data_ptr<acc_t>();
  std::vector<acc_t> m(N, -std::numeric_limits<acc_t>::infinity()), l(N, acc_t(0));

  for_each_block_pair((N + block - 1) / block, U.scalar_type(), [&](int64_t a, int64_t c, const Tensor& buffer) {
    acc_t* scratch = buffer.mutable_data_ptr<acc_t>() + kTileRows * kBlockRows;
    for_each_tile(N, block, a, c, [&](int64_t i0, int64_t rows, int64_t k0, int64_t cols, bool diagonal) {
      const Tensor S = tile_products(U, buffer, i0, rows, k0, cols);
      forward_tile(S.const_data_ptr<acc_t>(), rows, cols, diagonal, scale, i0, k0, m.data(), l.data(), scratch);
    });
  });

  torch::stable::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      lse[i] = m[i] + std::log(l[i]);
      const int64_t g0 = (i / J) * J;
      acc_t mx = -std::numeric_limits<acc_t>::infinity(), total = 0;
      for (int64_t p = g0; p < g0 + J; ++p) {
        if (p == i) continue;
        const acc_t s = scale * dot(u + i * D, u + p * D, D);
        total += s;
        mx = std::max(mx, s);
      }
      if (positives_lse) {
        acc_t sum = total - total;  // 0, or NaN when a positive logit is NaN
        for (int64_t p = g0; p < g0 + J; ++p)
          if (p != i) sum += std::exp(scale * dot(u + i * D, u + p * D, D) - mx);
        pos[i] = mx + std::log(sum);
      } else {
        pos[i] = total / acc_t(J - 1);
      }
      loss[i] = lse[i] - pos[i];
    }
  });
}

// Writes dL/dz (accumulation type, [N, D], zero on entry) into dz_t and returns dL/dscale.
template <typename acc_t>
acc_t backward_impl(Tensor U, const std::vector<acc_t>& inv, int64_t J, acc_t scale, bool normalize,
                    bool positives_lse, const acc_t* w, const acc_t* lse, const acc_t* pos, Tensor dz_t) {
  const int64_t N = U.size(0), D = U.size(1), block = block_rows(N);
  const acc_t* u = U.const_data_ptr<acc_t>();
  acc_t* dz = dz_t.mutable_data_ptr<acc_t>();
  std::vector<acc_t> row_dscale(N, acc_t(0));  // per-row parts of dL/dscale, summed in order at the end

  // dz <- (negatives' part of M) U, i.e. the negatives' part of dL/du / scale.
  for_each_block_pair((N + block - 1) / block, U.scalar_type(), [&](int64_t a, int64_t c, const Tensor& buffer) {
    for_each_tile(N, block, a, c, [&](int64_t i0, int64_t rows, int64_t k0, int64_t cols, bool diagonal) {
      Tensor S = tile_products(U, buffer, i0, rows, k0, cols);
      acc_t* M = S.mutable_data_ptr<acc_t>();  // S overwritten in place by M
      const int64_t sq = diagonal ? rows : 0;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        acc_t* Mr = M + r * cols;
        acc_t ds = 0;
        if (diagonal) {
          ds = pair_grad<false>(Mr, w + k0, lse + k0, w[i], lse[i], scale, 0, r, ds);
          ds = pair_grad<false>(Mr, w + k0, lse + k0, w[i], lse[i], scale, r + 1, sq, ds);
          Mr[r] = 0;
        }
        row_dscale[i] += pair_grad<true>(Mr, w + k0, lse + k0, w[i], lse[i], scale, sq, cols, ds);
      }
      addmm_(torch::stable::narrow(dz_t, 0, i0, rows), S, torch::stable::narrow(U, 0, k0, cols));
      if (sq < cols) {
        addmm_(torch::stable::narrow(dz_t, 0, k0 + sq, cols - sq),
               torch::stable::transpose(torch::stable::narrow(S, 1, sq, cols - sq), 0, 1),
               torch::stable::narrow(U, 0, i0, rows));
      }
    });
  });

  // Per row: subtract the positives' part, scale, and project through the normalisation.
  torch::stable::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g0 = (i / J) * J;
      const acc_t* ui = u + i * D;
      acc_t* di = dz + i * D;
      for (int64_t p = g0; p < g0 + J; ++p) {
        if (p == i) continue;
        const acc_t uu = dot(ui, u + p * D, D);
        const acc_t w_ip = positives_lse ? std::exp(scale * uu - pos[i]) : acc_t(1) / acc_t(J - 1);
        const acc_t w_pi = positives_lse ? std::exp(scale * uu - pos[p]) : acc_t(1) / acc_t(J - 1);
        const acc_t coeff = w[i] * w_ip + w[p] * w_pi;
        row_dscale[i] -= w[i] * w_ip * uu;
        for (int64_t d = 0; d < D; ++d) di[d] -= coeff * u[p * D + d];
      }
      for (int64_t d = 0; d < D; ++d) di[d] *= scale;
      if (!normalize) continue;
      const acc_t c = inv[i];
      if (c < acc_t(1) / acc_t(kNormEps)) {  // ||z_i|| > eps: u_i is a unit vector
        const acc_t proj = dot(ui, di, D);
        for (int64_t d = 0; d < D; ++d) di[d] -= proj * ui[d];
      }
      for (int64_t d = 0; d < D; ++d) di[d] *= c;
    }
  });
  acc_t dscale = 0;
  for (int64_t i = 0; i < N; ++i) dscale += row_dscale[i];
  return dscale;
}

// The temperature as a host value (a 0-dim CPU tensor of the accumulation type, checked).
template <typename acc_t>
acc_t host_value(const Tensor& t) {
  acc_t value;
  if constexpr (std::is_same_v<acc_t, double>) {
    TORCH_ERROR_CODE_CHECK(aoti_torch_item_float64(t.get(), &value));
  } else {
    TORCH_ERROR_CODE_CHECK(aoti_torch_item_float32(t.get(), &value));
  }
  return value;
}

// f(acc_t{}) with acc_t = double for float64 z, float for the other dtypes.
template <typename F>
void dispatch_accumulation(Dtype dtype, const F& f) {
  if (accumulates_in_double(dtype)) {
    f(double{});
  } else {
    f(float{});
  }
}

std::tuple<Tensor, Tensor, Tensor> info_nce_forward_cpu(const Tensor& z, const Tensor& temperature, bool normalize,
                                                        bool positives_logsumexp) {
  const Dtype dtype = check_info_nce_inputs(z, temperature);
  const torch::headeronly::ScalarType acc = accumulation_scalar_type(dtype);
  const Tensor zr = rows_of(z, acc);
  const int64_t N = zr.size(0);
  Tensor loss = torch::stable::empty({N}, acc), lse = torch::stable::empty({N}, acc), pos = torch::stable::empty({N}, acc);
  if (N == 0) return {loss, lse, pos};
  dispatch_accumulation(dtype, [&](auto tag) {
    using acc_t = decltype(tag);
    const acc_t scale = acc_t(1) / host_value<acc_t>(temperature);
    std::vector<acc_t> inv;
    const Tensor U = unit_rows(zr, normalize, inv);
    forward_impl<acc_t>(U, z.size(1), scale, positives_logsumexp, loss.mutable_data_ptr<acc_t>(),
                        lse.mutable_data_ptr<acc_t>(), pos.mutable_data_ptr<acc_t>());
  });
  return {loss, lse, pos};
}

std::tuple<Tensor, Tensor> info_nce_backward_cpu(const Tensor& grad_loss, const Tensor& z, const Tensor& temperature,
                                                 const Tensor& lse, const Tensor& pos, bool normalize,
                                                 bool positives_logsumexp) {
  const Dtype dtype = check_info_nce_inputs(z, temperature);
  check_info_nce_rows(z, grad_loss, lse, pos);
  const torch::headeronly::ScalarType acc = accumulation_scalar_type(dtype);
  const Tensor zr = rows_of(z, acc);
  const int64_t N = zr.size(0), D = zr.size(1);
  const Tensor w = torch::stable::contiguous(torch::stable::to(grad_loss, acc));
  const Tensor lse_c = torch::stable::contiguous(torch::stable::to(lse, acc));
  const Tensor pos_c = torch::stable::contiguous(torch::stable::to(pos, acc));
  Tensor dz = torch::stable::new_zeros(zr, {N, D});
  Tensor dtemp = torch::stable::new_zeros(temperature, std::vector<int64_t>{});
  if (N > 0) {
    dispatch_accumulation(dtype, [&](auto tag) {
      using acc_t = decltype(tag);
      const acc_t tau = host_value<acc_t>(temperature);
      const acc_t scale = acc_t(1) / tau;
      std::vector<acc_t> inv;
      const Tensor U = unit_rows(zr, normalize, inv);
      const acc_t dscale = backward_impl<acc_t>(U, inv, z.size(1), scale, normalize, positives_logsumexp,
                                                w.const_data_ptr<acc_t>(), lse_c.const_data_ptr<acc_t>(),
                                                pos_c.const_data_ptr<acc_t>(), dz);
      torch::stable::fill_(dtemp, -dscale * scale * scale);
    });
  }
  return {torch::stable::to(torch::stable::view(dz, z.sizes()), z.scalar_type()), dtemp};
}

}  // namespace
}  // namespace simvae

STABLE_TORCH_LIBRARY_IMPL(simvae_fast, CPU, m) {
  m.impl("info_nce_forward", TORCH_BOX(&simvae::info_nce_forward_cpu));
  m.impl("info_nce_backward", TORCH_BOX(&simvae::info_nce_backward_cpu));
}
