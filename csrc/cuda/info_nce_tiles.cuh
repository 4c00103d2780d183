// The InfoNCE tile kernels' block bodies, written once over an execution policy P (exec_policy_device.cuh on
// the GPU, exec_policy_host.h in the tests) and an operand format E (tile_types.h: Bf16, F16, or Tf32 for
// float32 when TF32 is allowed). Math: docs/math.md §4; the symmetric tiles of §4.1, variant "two maxima"
// with "partials and atomics".
//
// Notation: z_i the N rows, c_i = 1/max(||z_i||, 1e-12) with normalize, else 1; u_i = c_i z_i; s_ik = c_i c_k
// (z_i . z_k) / tau. The tensor cores multiply z itself (cp.async copies it to shared memory untouched; for
// Tf32 the copy prep_rows staged, rounded to tf32) and c enters as row and column factors; exponentials are
// 2^x with log2(e) / tau folded into the row factor.
//
// Block: 4 warps, warp w owns rows 16w .. 16w + 15 of the row block I (64 rows); a tile is S = Z_I Z_K^T
// (64 x 64), each warp's 16 x 64 slice in mma accumulators (8 n8 fragments, 32 fp32 per thread; m16n8k16 for
// 16-bit E, m16n8k8 .tf32 for Tf32: same accumulator layout). Shared memory (TileSmem): Z_I, two Z_K buffers
// (cp.async double buffering: tile t + 1 is copied while t is computed; one barrier per tile; one buffer where
// two would not leave room for 2 blocks per SM, see backward_block), per-tile column statistics, and the
// exchange buffers below. Rows are padded by 16 bytes, so the 8 rows an ldmatrix reads fall in 8 different
// 16-byte bank groups (no bank conflict); for Tf32's 32-bit fragment loads (row 2q + k0, column g + n0 of a
// lane (g, q)) the row pitch is 4 words mod 32, so the 32 lanes hit banks 8q + g: no conflict either. Only the
// Tf32 Q c_I exchange stores (64-bit, 2 per lane group) are 2-way conflicted (a pitch cannot suit both).
//
// Why mma.sync and not Hopper's wgmma/TMA: the target (<= 300 us fwd+bwd at N = 8192, D = 128 bf16, ~2x the
// ideal) is within what mma.sync reaches (FlashAttention-2 runs at this level on H100), every step of it can be
// emulated lane by lane on the host from the PTX ISA's fragment layouts (wgmma's descriptors and TMA are not),
// and it needs no new dependency (CuTe would be a package and an opaque layer).
//
// Forward (forward_block): for each of its tiles (I, K) the block updates
//   rows of I (per thread, online over its 16 columns of each tile):   m <- max(m, s),  l <- l 2^(m_old - m) +
//     sum 2^(s - m);  merged over the 4 threads of a row at the end -> row_part[chunk][i];
//   rows of K from S^T (t > 0): per tile, each warp's column maximum and sum over its 16 rows (shuffles over the
//     8 row groups of the fragment), the 4 warps merged through shared memory -> col_part[t][k].
//   info_nce_rows.cuh merges the partials of a row in a fixed order: lse_i. Deterministic, no atomics.
// Backward (backward_block), with w_i = dL/dloss_i, P_ik = 2^(s_ik - lse_i) (base-2 units),
// Q_ik = w_i P_ik + w_k P_ki (i != k, the negatives' part of G + G^T; the positives' part is O(N J D), in
// info_nce_rows.cuh):
//   dU_I += (Q c_K) Z_K     A operand straight from the S accumulators (FlashAttention-2's register reuse;
//                           Tf32: k permuted inside each 8-row step, see load_b_kn)
//   dU_K += (Q^T c_I) Z_I   symmetric sweep, t > 0: Q c_I through shared memory (ldmatrix.trans; Tf32: 32-bit
//                           loads), summed into du with fp32 vector atomics (red.global.add.v2.f32)
//   dscale += sum Q uu (off-diagonal), sum w_i P_ik uu (diagonal tile, and every tile of the full sweep)
// The deterministic sweep (torch.use_deterministic_algorithms) visits every K for its I, skips dU_K and stores
// its dU_I into its own chunk's slice of du (summed in a fixed order later): no atomics, 4/3 of the FLOPs.
// The A operands (Q c) are rounded to E (Tf32: cvt.rna.tf32.f32); they are first multiplied by 2^e
// (operand_scale) so that their largest possible value, 2 max_i |w_i| max_k c_k, lands in [2^14, 2^15):
// float16 neither overflows nor flushes the entries of size ~1/N^2 (issue 13, defect 1); du is divided by 2^e
// afterwards (exact).
//
// Cost at N = 8192, D = 128 (nb = 128; T = N^2/2 pairs of rows; the same counts for bf16 and fp32-TF32):
// FLOPs (2 per multiply-add)
//   forward  2 T D          = 8.6e9    backward 6 T D = 2.6e10   total 4 N^2 D = 3.4e10
//   exp2     forward 2 T    = 6.7e7    backward 2 T   = 6.7e7    total 2 N^2   = 1.3e8
// (the forward's row and column sides need their own maxima for stability at every tau and for unnormalised
// rows, so 2 exponentials per pair in the forward, where docs/math.md §4.1's "one shared shift" takes one).
//   bytes, bf16: z read per tile from L2: (pairs of 64-row blocks 8.3e3) x 16 KB = 135 MB fwd and again bwd
//   (L2, not DRAM: z is 2 MB); DRAM compulsory ~N D (2 + 2 + 4 + 4) = 12.6 MB; du atomics (symmetric)
//   64 x 128 x 4 B per off-diagonal tile = 8.1e3 x 32 KB = 268 MB into L2 (du is 4 MB and stays there).
//   fp32-TF32: tiles of 32 KB, 270 MB fwd and bwd from L2; the same 268 MB of atomics; DRAM ~N D (4 + 4 (the
//   rounded copy) + 4 + 4 + 4) = 21 MB.
//   shared memory per tile (all warps; ldmatrix.x4 and a warp's 4 32-bit loads are 512 B each): bf16 logits
//   80 KB, dU_I 64 KB, dU_K 96 KB, + ~48 KB of cp.async writes, statistics and exchange; fp32-TF32 twice that
//   (the same bytes per mma instruction, twice the instructions): 160 + 128 + 192 + ~88 KB.
// Predicted on an H200 from the roofs (790 TFLOP/s bf16 measured, 494 TF32 datasheet, 4e12 exp/s, 4.3 TB/s;
// shared memory 128 B/clk/SM = 31 TB/s at 1.83 GHz; L2 atomics and reads ~4-5 TB/s assumed, not measured):
//   bf16: mma.sync at ~60% of the dense peak (470 TFLOP/s): forward max(18 us FLOP, 17 us exp, 28 us shared)
//   ~ 28 us; backward max(55 us FLOP, 17 us exp, 67 us atomics, 78 us shared) ~ 80 us; row kernels ~5 us:
//   ~110 us forward + backward (deterministic backward: 73 us FLOP, 100 us shared, no atomics: ~130 us);
//   target <= 300 us, and issue 13 sets the Triton kernel's goal at <= 150 us.
//   fp32-TF32 (TF32 at 80% of its datasheet peak, as bf16 measures: 395 TFLOP/s): shared memory binds (the
//   logits need 2.5 clk of it per 1-clk mma.m16n8k8, dU_I 2, dU_K 3): forward max(22 us FLOP, 17 us exp,
//   54 us L2 reads at 5 TB/s, 55 us shared) ~ 55 us; backward max(66 us FLOP, 67 us atomics, 155 us shared)
//   ~ 155 us; row kernels ~8 us: ~220 us forward + backward (deterministic backward: 187 us shared: ~250 us),
//   against ~3.5 ms for the exact FFMA kernels (issue 14's estimate of that path).
// Not yet measured (benchmarks/results/cuda_info_nce.md).
#pragma once
#include <cmath>

#include "info_nce_plan.h"
#include "tile_types.h"

namespace simvae {
namespace tiles {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -INFINITY;

// 2^e such that 2 max_c max_w 2^e lies in [2^14, 2^15) (1 when that product is 0 or not finite).
SIMVAE_HD float operand_scale(const float* maxima) {
  const float p = maxima[0] * maxima[1];
  if (!(p > 0.0f) || !(p < INFINITY)) return 1.0f;
  int e;
  frexpf(p, &e);  // p in [2^(e-1), 2^e)
  int x = 14 - e;
  x = x < -120 ? -120 : (x > 120 ? 120 : x);
  return ldexpf(1.0f, x);
}

SIMVAE_HD MaxSum merge_parts(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m), mu = m == kNegInf ? 0.0f : m;
  return {m, a.l * exp2f(a.m - mu) + b.l * exp2f(b.m - mu)};
}

// sm_90 shared memory: 228 KB per SM, of which 1 KB per resident block is the system's.
constexpr uint32_t kSmemPerSm = 233472, kSmemReservedPerBlock = 1024;

// Shared memory of a block, byte offsets, for operand format E, kDims padded dims, and kQExchange: whether the
// exchange buffer holds the symmetric backward's Q c_I (else the forward's column partials). Rows of z are
// E's elements padded by 16 bytes. Z_K is double-buffered when two blocks still fit on an SM with two buffers;
// otherwise (tf32 at 128 dims in the symmetric backward: 118 KB with two) it has one buffer, 85 KB (see
// backward_block). Bank conflicts: module header.
template <class E, int kDims, bool kQExchange>
struct TileSmem {
  using Format = E;
  static constexpr int kPaddedDims = kDims;
  static constexpr uint32_t kRowBytes = kDims * E::kBytes + 16;
  static constexpr uint32_t kTileBytes = kBlockRows * kRowBytes;
  static constexpr uint32_t kStatBytes = 3 * kBlockRows * 4;  // per Z_K buffer: [3: c_k, lse_k (base 2), w_k][64]
  // forward: [2 buffers][4 warps][64 columns] MaxSum; symmetric backward: Q c_I as [64 rows of I][64 + pad] of E.
  static constexpr uint32_t kQRowBytes = kBlockRows * E::kBytes + 16;
  static constexpr uint32_t kExchangeBytes = kQExchange ? kBlockRows * kQRowBytes : 2 * kWarpsPerBlock * kBlockRows * 8;
  static constexpr uint32_t kFixedBytes = kTileBytes + kExchangeBytes + 16 + 3 * kBlockRows * 4;
  static constexpr int kZkBuffers =
      2 * (kFixedBytes + 2 * (kTileBytes + kStatBytes) + kSmemReservedPerBlock) <= kSmemPerSm ? 2 : 1;
  static constexpr uint32_t kZi = 0;
  SIMVAE_HD static constexpr uint32_t zk(int buf) { return kTileBytes * (1 + buf); }
  static constexpr uint32_t kStats = kTileBytes * (1 + kZkBuffers);
  SIMVAE_HD static constexpr uint32_t stat(int buf, int q, int col) {
    return kStats + ((buf * 3 + q) * kBlockRows + col) * 4;
  }
  static constexpr uint32_t kExchange = kStats + kZkBuffers * kStatBytes;
  SIMVAE_HD static constexpr uint32_t colpart(int buf, int warp, int col) {
    return kExchange + ((buf * kWarpsPerBlock + warp) * kBlockRows + col) * 8;
  }
  SIMVAE_HD static constexpr uint32_t q_elem(int row, int col) {
    return kExchange + row * kQRowBytes + col * E::kBytes;
  }
  static constexpr uint32_t kReduce = kExchange + kExchangeBytes;  // [4 warps] floats
  static constexpr uint32_t kRowStats = kReduce + 16;             // backward: [3: c_i, lse_i, w_i][64] floats
  SIMVAE_HD static constexpr uint32_t row_stat(int q, int row) { return kRowStats + (q * kBlockRows + row) * 4; }
  static constexpr uint32_t kBytes = kRowStats + 3 * kBlockRows * 4;
  static_assert(kBytes == kFixedBytes + kZkBuffers * (kTileBytes + kStatBytes), "layout");
  // __launch_bounds__(128, 2) of the tile kernels: two blocks' dynamic shared memory fit on one SM (this also
  // holds each block under the 227 KB per-block limit).
  static_assert(2 * (kBytes + kSmemReservedPerBlock) <= kSmemPerSm, "two resident blocks per SM");
};

struct TileProblem {
  const void* z;  // [N, pitch] of E::Bits, rows 16-byte aligned, zero beyond D (tf32: rounded, info_nce_rows.cuh)
  int64_t pitch;
  int N;
  Sweep sweep;
  const float* temperature;
  const float* inv_norm;  // c_i
};

struct ForwardTileArgs {
  TileProblem p;
  MaxSum* row_part;  // [chunks][rows]
  MaxSum* col_part;  // [max_row_tiles][rows]
};

struct BackwardTileArgs {
  TileProblem p;
  const float* lse;     // natural log
  const float* w;       // dL/dloss_i
  const float* maxima;  // max c_i, max |w_i|
  float* du;            // [parts][rows][dims], 2^e dL/du before the positives and the 1/tau
  float* ds_part;       // [blocks]
};

// Copies rows [row0, row0 + 64) of z into the tile at `dst` (rows beyond N and chunks beyond pitch: zeros).
template <class P, class L>
SIMVAE_TILE void issue_rows(const TileProblem& p, Thread t, uint32_t dst, int row0) {
  constexpr int kPer = 16 / L::Format::kBytes;       // elements per 16-byte chunk
  constexpr int kChunks = L::kPaddedDims / kPer;     // chunks per row
  const char* z = static_cast<const char*>(p.z);
  for (int c = 32 * t.warp + t.lane; c < kBlockRows * kChunks; c += kThreadsPerBlock) {
    const int row = c / kChunks, chunk = c % kChunks;
    const bool valid = row0 + row < p.N && chunk * kPer < p.pitch;
    const char* src = valid ? z + ((int64_t(row0) + row) * p.pitch + chunk * kPer) * L::Format::kBytes : z;
    P::cp_async16(t, dst + row * L::kRowBytes + chunk * 16, src, valid);
  }
}

// acc = Z_I[16 w .., :] Z_K^T for warp w: 16 x 64 in 8 m16n8 accumulator fragments. A k-step is 32 bytes of a
// row (16 16-bit elements: one m16n8k16; 8 tf32 ones: one m16n8k8), so the ldmatrix addresses are the same
// bytes for both: on 32-bit data, register j of lane (g, q) is element q of row g of matrix j, which is the
// tf32 A layout ((g, q), (g+8, q), (g, q+4), (g+8, q+4)) and B layout ((k q, n g), (k q+4, n g)).
template <class P, class L, class Acc, class Frag>
SIMVAE_TILE void logit_tile(int w, uint32_t zk, Acc& acc, Frag& a, Frag& b) {
  using E = typename L::Format;
  P::each_lane(w, [&](Thread t) {
    SIMVAE_UNROLL
    for (int j = 0; j < 8; ++j)
      SIMVAE_UNROLL
      for (int e = 0; e < 4; ++e) acc[t][j][e] = 0.0f;
  });
SIMVAE_UNROLL
  for (int ks = 0; ks < L::kPaddedDims * E::kBytes / 32; ++ks) {
    P::ldmatrix_x4(w, false, [&](Thread t) { return a[t]; }, [&](Thread t) {
      return L::kZi + (16 * w + (t.lane & 7) + ((t.lane >> 3) & 1) * 8) * L::kRowBytes + 32 * ks +
             (t.lane >> 4) * 16;
    });
SIMVAE_UNROLL
    for (int jj = 0; jj < 4; ++jj) {  // n8 fragments 2 jj, 2 jj + 1: columns 16 jj .. 16 jj + 15
      P::ldmatrix_x4(w, false, [&](Thread t) { return b[t]; }, [&](Thread t) {
        const int q = t.lane >> 3;
        return zk + (16 * jj + (q >> 1) * 8 + (t.lane & 7)) * L::kRowBytes + 32 * ks + (q & 1) * 16;
      });
      P::template mma<E>(w, [&](Thread t) { return acc[t][2 * jj]; }, [&](Thread t) { return a[t]; },
                         [&](Thread t) { return b[t]; });
      P::template mma<E>(w, [&](Thread t) { return acc[t][2 * jj + 1]; }, [&](Thread t) { return a[t]; },
                         [&](Thread t) { return b[t] + 2; });
    }
  }
}

// v[t][i] <- op over the 8 row groups of the fragment (lanes that differ in bits 2..4) of v[.][i].
template <class P, int kN, class V, class Op>
SIMVAE_TILE void reduce_over_groups(int w, V& v, V& other, Op op) {
SIMVAE_UNROLL
  for (int mask = 4; mask < 32; mask <<= 1) {
SIMVAE_UNROLL
    for (int i = 0; i < kN; ++i)
      P::shfl_xor(w, [&](Thread t) { return v[t][i]; }, [&](Thread t) -> float& { return other[t][i]; }, mask);
    P::each_lane(w, [&](Thread t) {
      for (int i = 0; i < kN; ++i) v[t][i] = op(v[t][i], other[t][i]);
    });
  }
}

struct MaxOp {
  SIMVAE_HD float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  SIMVAE_HD float operator()(float a, float b) const { return a + b; }
};

template <class P, class E, int kDims>
SIMVAE_TILE void forward_block(const ForwardTileArgs& args, int block) {
  using L = TileSmem<E, kDims, false>;
  static_assert(L::kZkBuffers == 2, "the forward double-buffers Z_K");
  const TileProblem& p = args.p;
  int I, t_begin, t_end;
  p.sweep.range(block, I, t_begin, t_end);
  const int nb = p.sweep.nb, chunk = block % p.sweep.chunks;
  const float kscale = kLog2e / *p.temperature;
  typename P::template PerThread<float[2]> row_factor, m, l;
  typename P::template PerThread<float[8][4]> s;
  typename P::template PerThread<float[16]> cm, cl, other;
  typename P::template PerThread<float[4]> x;
  typename P::template PerThread<uint32_t[4]> a, b;

  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      SIMVAE_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int i = I * kBlockRows + 16 * w + t.group() + 8 * r;
        row_factor[t][r] = i < p.N ? kscale * p.inv_norm[i] : 0.0f;
        m[t][r] = kNegInf;
        l[t][r] = 0.0f;
      }
    });
  });
  // Copies tile t's Z_K and c_K into buffer `buf`.
  auto issue_tile = [&](Thread t, int tile, int buf) {
    const int K = (I + tile) % nb;
    issue_rows<P, L>(p, t, L::zk(buf), K * kBlockRows);
    const int col = 32 * t.warp + t.lane, k = K * kBlockRows + col;
    if (col < kBlockRows) P::template sts<float>(t, L::stat(buf, 0, col), k < p.N ? p.inv_norm[k] : 0.0f);
  };
  // Merges the 4 warps' column partials of tile `tile` (in buffer `buf`) into col_part.
  auto store_columns = [&](Thread t, int tile, int buf) {
    const int col = 32 * t.warp + t.lane;
    if (col >= kBlockRows) return;
    MaxSum total{kNegInf, 0.0f};
    SIMVAE_UNROLL
    for (int v = 0; v < kWarpsPerBlock; ++v)
      total = merge_parts(total, P::template lds<MaxSum>(t, L::colpart(buf, v, col)));
    const int64_t k = int64_t((I + tile) % nb) * kBlockRows + col;
    args.col_part[int64_t(tile) * nb * kBlockRows + k] = total;
  };

  if (t_begin < t_end)
    P::each_warp([&](int w) {
      P::each_lane(w, [&](Thread t) {
        issue_rows<P, L>(p, t, L::kZi, I * kBlockRows);
        issue_tile(t, t_begin, 0);
        P::cp_async_commit(t);
      });
    });
  for (int tile = t_begin; tile < t_end; ++tile) {
    const int buf = (tile - t_begin) & 1, K = (I + tile) % nb;
    P::each_warp([&](int w) { P::each_lane(w, [&](Thread t) { P::cp_async_wait_all(t); }); });
    P::barrier();  // tile `tile` is in buffer `buf`; every warp is done with buffer buf ^ 1
    P::each_warp([&](int w) {
      P::each_lane(w, [&](Thread t) {
        if (tile > t_begin && tile - 1 > 0) store_columns(t, tile - 1, buf ^ 1);
        if (tile + 1 < t_end) issue_tile(t, tile + 1, buf ^ 1);
        P::cp_async_commit(t);
      });
      logit_tile<P, L>(w, L::zk(buf), s, a, b);
      // Logits in base 2; -inf where k = i (diagonal tile), or beyond N.
      const bool edge = tile == 0 || (I + 1) * kBlockRows > p.N || (K + 1) * kBlockRows > p.N;
      P::each_lane(w, [&](Thread t) {
        SIMVAE_UNROLL
        for (int j = 0; j < 8; ++j) {
          const Float2 ck = P::template lds<Float2>(t, L::stat(buf, 0, 8 * j + 2 * t.quad()));
          SIMVAE_UNROLL
          for (int e = 0; e < 4; ++e) {
            const int r = e / 2, col = 8 * j + 2 * t.quad() + e % 2;
            const int row = 16 * w + t.group() + 8 * r;
            float v = s[t][j][e] * row_factor[t][r] * (e % 2 ? ck.y : ck.x);
            if (edge && (I * kBlockRows + row >= p.N || K * kBlockRows + col >= p.N || (tile == 0 && row == col)))
              v = kNegInf;
            s[t][j][e] = v;
          }
        }
        SIMVAE_UNROLL
        for (int r = 0; r < 2; ++r) {  // rows of I: online over this thread's 16 columns
          float tile_max = kNegInf;
          SIMVAE_UNROLL
          for (int j = 0; j < 8; ++j) tile_max = fmaxf(tile_max, fmaxf(s[t][j][2 * r], s[t][j][2 * r + 1]));
          const float m_new = fmaxf(m[t][r], tile_max), mu = m_new == kNegInf ? 0.0f : m_new;
          float sum = 0.0f;
          SIMVAE_UNROLL
          for (int j = 0; j < 8; ++j) sum += P::exp2(s[t][j][2 * r] - mu) + P::exp2(s[t][j][2 * r + 1] - mu);
          l[t][r] = l[t][r] * P::exp2(m[t][r] - mu) + sum;
          m[t][r] = m_new;
        }
      });
      if (tile == 0) return;
      // Rows of K (columns of S): maximum and sum over the warp's 16 rows, per column.
      P::each_lane(w, [&](Thread t) {
        SIMVAE_UNROLL
        for (int j = 0; j < 8; ++j)
          SIMVAE_UNROLL
          for (int h = 0; h < 2; ++h) cm[t][2 * j + h] = fmaxf(s[t][j][h], s[t][j][2 + h]);
      });
      reduce_over_groups<P, 16>(w, cm, other, MaxOp{});
      P::each_lane(w, [&](Thread t) {
        SIMVAE_UNROLL
        for (int j = 0; j < 8; ++j)
          SIMVAE_UNROLL
          for (int h = 0; h < 2; ++h) {
            const float mu = cm[t][2 * j + h] == kNegInf ? 0.0f : cm[t][2 * j + h];
            cl[t][2 * j + h] = P::exp2(s[t][j][h] - mu) + P::exp2(s[t][j][2 + h] - mu);
          }
      });
      reduce_over_groups<P, 16>(w, cl, other, SumOp{});
      P::each_lane(w, [&](Thread t) {  // every row group holds all of them; group 0 stores
        if (t.group() != 0) return;
        SIMVAE_UNROLL
        for (int j = 0; j < 8; ++j)
            SIMVAE_UNROLL
            for (int h = 0; h < 2; ++h) {
              const int col = 8 * j + 2 * t.quad() + h;
              P::template sts<MaxSum>(t, L::colpart(buf, w, col), MaxSum{cm[t][2 * j + h], cl[t][2 * j + h]});
            }
      });
    });
  }
  if (t_end - 1 > 0 && t_end > t_begin) {
    P::barrier();
    const int last = t_end - 1, buf = (t_end - 1 - t_begin) & 1;
    P::each_warp([&](int w) { P::each_lane(w, [&](Thread t) { store_columns(t, last, buf); }); });
  }
  // Rows of I: merge the 4 threads of each row (lanes that differ in bits 0..1), then store.
  for (int mask = 1; mask < 4; mask <<= 1)
    P::each_warp([&](int w) {
      SIMVAE_UNROLL
      for (int r = 0; r < 2; ++r) {
        P::shfl_xor(w, [&](Thread t) { return m[t][r]; }, [&](Thread t) -> float& { return x[t][2 * r]; }, mask);
        P::shfl_xor(w, [&](Thread t) { return l[t][r]; }, [&](Thread t) -> float& { return x[t][2 * r + 1]; }, mask);
      }
      P::each_lane(w, [&](Thread t) {
        SIMVAE_UNROLL
        for (int r = 0; r < 2; ++r) {
          const MaxSum merged = merge_parts({m[t][r], l[t][r]}, {x[t][2 * r], x[t][2 * r + 1]});
          m[t][r] = merged.m;
          l[t][r] = merged.l;
        }
      });
    });
  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      if (t.quad() != 0) return;
      SIMVAE_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int64_t i = int64_t(I) * kBlockRows + 16 * w + t.group() + 8 * r;
        args.row_part[int64_t(chunk) * nb * kBlockRows + i] = MaxSum{m[t][r], l[t][r]};
      }
    });
  });
}


// The backward's products with k = the 64 rows of a tile, kKSteps = 64 E::kBytes / 32 k-steps (4 of 16 rows, or
// 8 of 8 rows for tf32). tf32 reuses the S accumulators as A operands (as the 16-bit formats do) by permuting
// k inside each 8-row step: the operands' k = q and q + 4 stand for the step's rows 2q and 2q + 1, which are the
// two columns of S lane (g, q) holds; the B operands are read with the same permutation (a sum over k does not
// depend on its order), by 32-bit loads (ldmatrix .trans moves 16-bit elements only).

// B fragments for k-step ks, n = dims 16 jd .. 16 jd + 15 of the row-major (k x n) tile at `base` (Z_K or Z_I):
// registers 0-1 for n8 fragment 2 jd, 2-3 for 2 jd + 1.
template <class P, class L, class Frag>
SIMVAE_TILE void load_b_kn(int w, uint32_t base, int ks, int jd, Frag& b) {
  if constexpr (L::Format::kTf32) {
    P::each_lane(w, [&](Thread t) {
      SIMVAE_UNROLL
      for (int i = 0; i < 4; ++i) {  // (k' = q + 4 (i % 2), n = g + 8 (i / 2)): row 8 ks + 2q + i % 2
        const int k = 8 * ks + 2 * t.quad() + i % 2, n = 16 * jd + 8 * (i / 2) + t.group();
        b[t][i] = P::template lds<uint32_t>(t, base + k * L::kRowBytes + n * 4);
      }
    });
  } else {
    P::ldmatrix_x4(w, true, [&](Thread t) { return b[t]; }, [&](Thread t) {
      const int q = t.lane >> 3;
      return base + (16 * ks + (q & 1) * 8 + (t.lane & 7)) * L::kRowBytes + (16 * jd + (q >> 1) * 8) * 2;
    });
  }
}

// A fragment for k-step ks of warp w's (Q c_I)^T: m = rows 16 w .. of K, k = rows of I, from the exchange.
template <class P, class L, class Frag>
SIMVAE_TILE void load_a_exchange(int w, int ks, Frag& a) {
  if constexpr (L::Format::kTf32) {
    P::each_lane(w, [&](Thread t) {
      SIMVAE_UNROLL
      for (int i = 0; i < 4; ++i) {  // (m = g + 8 (i % 2), k' = q + 4 (i / 2)): row 8 ks + 2q + i / 2 of I
        const int k = 8 * ks + 2 * t.quad() + i / 2, m = 16 * w + 8 * (i % 2) + t.group();
        a[t][i] = P::template lds<uint32_t>(t, L::q_elem(k, m));
      }
    });
  } else {
    P::ldmatrix_x4(w, true, [&](Thread t) { return a[t]; }, [&](Thread t) {
      const int q = t.lane >> 3;
      return L::q_elem(16 * ks + (q >> 1) * 8 + (t.lane & 7), 16 * w + (q & 1) * 8);
    });
  }
}

// One Z_K buffer (L::kZkBuffers == 1: tf32 at 128 dims, symmetric): the next tile's copy is issued after the
// barrier that follows dU_I (every warp is done with Z_K then) and overlaps dU_K, which reads only Z_I and the
// exchange; a block-uniform extra barrier on the one tile without dU_K (t = 0).
template <class P, class E, int kDims, bool kSymmetric>
SIMVAE_TILE void backward_block(const BackwardTileArgs& args, int block) {
  using L = TileSmem<E, kDims, kSymmetric>;
  constexpr bool kDoubleBuffer = L::kZkBuffers == 2;
  constexpr int kN8 = kDims / 8;
  constexpr int kKSteps = kBlockRows * E::kBytes / 32;
  constexpr int kSlice = kDims >= 256 ? 16 : 32;  // dims of dU_K per pass (registers next to dU_I's)
  static_assert(kDoubleBuffer || kSymmetric, "one Z_K buffer only where dU_K hides the copy");
  const TileProblem& p = args.p;
  int I, t_begin, t_end;
  p.sweep.range(block, I, t_begin, t_end);
  const int nb = p.sweep.nb, chunk = block % p.sweep.chunks;
  const int64_t rows = int64_t(nb) * kBlockRows;
  const float kscale = kLog2e / *p.temperature, pow2 = operand_scale(args.maxima);
  typename P::template PerThread<float[kN8][4]> du;     // this warp's 16 rows of dU_I (2^e scaled)
  typename P::template PerThread<float[8][4]> s;
  typename P::template PerThread<uint32_t[kKSteps][4]> qa;  // Q c_K 2^e as A fragments
  typename P::template PerThread<float[kSlice / 8][4]> dk;  // a 16 x kSlice slice of dU_K
  typename P::template PerThread<float> ds, other;
  typename P::template PerThread<uint32_t[4]> a, b;

  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      SIMVAE_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int i = I * kBlockRows + 16 * w + t.group() + 8 * r;
        if (t.quad() != 0) continue;  // row stats in shared memory (registers are dU_I's)
        const int row = 16 * w + t.group() + 8 * r;
        P::template sts<float>(t, L::row_stat(0, row), i < p.N ? p.inv_norm[i] : 0.0f);
        P::template sts<float>(t, L::row_stat(1, row), i < p.N ? args.lse[i] * kLog2e : 0.0f);
        P::template sts<float>(t, L::row_stat(2, row), i < p.N ? args.w[i] : 0.0f);
      }
      SIMVAE_UNROLL
      for (int j = 0; j < kN8; ++j)
        SIMVAE_UNROLL
        for (int e = 0; e < 4; ++e) du[t][j][e] = 0.0f;
      ds[t] = 0.0f;
    });
  });
  auto issue_tile = [&](Thread t, int tile, int buf) {
    const int K = (I + tile) % nb;
    issue_rows<P, L>(p, t, L::zk(buf), K * kBlockRows);
    const int col = 32 * t.warp + t.lane, k = K * kBlockRows + col;
    if (col >= kBlockRows) return;
    const bool in = k < p.N;
    P::template sts<float>(t, L::stat(buf, 0, col), in ? p.inv_norm[k] : 0.0f);
    P::template sts<float>(t, L::stat(buf, 1, col), in ? args.lse[k] * kLog2e : 0.0f);
    P::template sts<float>(t, L::stat(buf, 2, col), in ? args.w[k] : 0.0f);
  };

  if (t_begin < t_end)
    P::each_warp([&](int w) {
      P::each_lane(w, [&](Thread t) {
        issue_rows<P, L>(p, t, L::kZi, I * kBlockRows);
        issue_tile(t, t_begin, 0);
        P::cp_async_commit(t);
      });
    });
  for (int tile = t_begin; tile < t_end; ++tile) {
    const int buf = kDoubleBuffer ? (tile - t_begin) & 1 : 0, K = (I + tile) % nb;
    const bool k_side = kSymmetric && tile > 0;  // block-uniform
    P::each_warp([&](int w) { P::each_lane(w, [&](Thread t) { P::cp_async_wait_all(t); }); });
    P::barrier();  // tile in buffer buf; every warp is done with buffer buf ^ 1 and with the Q exchange
    P::each_warp([&](int w) {
      if (kDoubleBuffer)
        P::each_lane(w, [&](Thread t) {
          if (tile + 1 < t_end) issue_tile(t, tile + 1, buf ^ 1);
          P::cp_async_commit(t);
        });
      logit_tile<P, L>(w, L::zk(buf), s, a, b);
      const bool edge = tile == 0 || (I + 1) * kBlockRows > p.N || (K + 1) * kBlockRows > p.N;
      P::each_lane(w, [&](Thread t) {
        float rc[2], rl[2], rw[2];  // c_i, lse_i (base 2), w_i of rows g, g + 8
        SIMVAE_UNROLL
        for (int r = 0; r < 2; ++r) {
          const int row = 16 * w + t.group() + 8 * r;
          rc[r] = P::template lds<float>(t, L::row_stat(0, row));
          rl[r] = P::template lds<float>(t, L::row_stat(1, row));
          rw[r] = P::template lds<float>(t, L::row_stat(2, row));
        }
        SIMVAE_UNROLL
        for (int j = 0; j < 8; ++j) {  // n8 fragment j: columns 8 j + 2 quad + h, rows g + 8 r
          const int col = 8 * j + 2 * t.quad();
          const Float2 ck = P::template lds<Float2>(t, L::stat(buf, 0, col));
          const Float2 lk = P::template lds<Float2>(t, L::stat(buf, 1, col));
          const Float2 wk = P::template lds<Float2>(t, L::stat(buf, 2, col));
          SIMVAE_UNROLL
          for (int r = 0; r < 2; ++r) {
            const int row = 16 * w + t.group() + 8 * r;
            float side_i[2], side_k[2];
            SIMVAE_UNROLL
            for (int h = 0; h < 2; ++h) {
              const float c_k = h ? ck.y : ck.x, l_k = h ? lk.y : lk.x, w_k = h ? wk.y : wk.x;
              const float uu = s[t][j][2 * r + h] * rc[r] * c_k, x = uu * kscale;
              const float g_ik = rw[r] * P::exp2(x - rl[r]), g_ki = w_k * P::exp2(x - l_k);
              const bool valid = !edge || (I * kBlockRows + row < p.N && K * kBlockRows + col + h < p.N &&
                                           (tile != 0 || row != col + h));
              const float q = valid ? g_ik + g_ki : 0.0f;
              if (valid) ds[t] += (k_side ? q : g_ik) * uu;
              side_i[h] = q * c_k * pow2;
              side_k[h] = q * rc[r] * pow2;
            }
            if constexpr (E::kTf32) {
              // k-step j; (row half r, k' = q): column 2q (h = 0), k' = q + 4: column 2q + 1 (h = 1).
              qa[t][j][r] = E::operand(side_i[0]);
              qa[t][j][2 + r] = E::operand(side_i[1]);
              if (k_side)
                P::template sts<Bits2>(t, L::q_elem(row, col), Bits2{E::operand(side_k[0]), E::operand(side_k[1])});
            } else {
              // k-step j / 2 (columns 16 (j / 2) ..): registers (row half r, column half j % 2).
              qa[t][j / 2][2 * (j % 2) + r] = E::pack(side_i[0], side_i[1]);
              if (k_side) P::template sts<uint32_t>(t, L::q_elem(row, col), E::pack(side_k[0], side_k[1]));
            }
          }
        }
      });
      // dU_I += (Q c_K) Z_K: k = the 64 rows of K, n = the dims.
SIMVAE_UNROLL
      for (int ks = 0; ks < kKSteps; ++ks)
SIMVAE_UNROLL
        for (int jd = 0; jd < kDims / 16; ++jd) {
          load_b_kn<P, L>(w, L::zk(buf), ks, jd, b);
          P::template mma<E>(w, [&](Thread t) { return du[t][2 * jd]; }, [&](Thread t) { return qa[t][ks]; },
                             [&](Thread t) { return b[t]; });
          P::template mma<E>(w, [&](Thread t) { return du[t][2 * jd + 1]; }, [&](Thread t) { return qa[t][ks]; },
                             [&](Thread t) { return b[t] + 2; });
        }
    });
    if constexpr (kSymmetric) {  // the deterministic sweep has no dU_K
      if (kDoubleBuffer && !k_side) continue;
      P::barrier();  // every warp's Q c_I is in shared memory (one buffer: every warp is done with Z_K)
      // dU_K[16 w .., :] += (Q c_I)^T Z_I, kSlice dims at a time: k = the 64 rows of I.
      P::each_warp([&](int w) {
        if (!kDoubleBuffer)
          P::each_lane(w, [&](Thread t) {
            if (tile + 1 < t_end) issue_tile(t, tile + 1, 0);
            P::cp_async_commit(t);
          });
        if (!k_side) return;
SIMVAE_UNROLL
        for (int dc = 0; dc < kDims / kSlice; ++dc) {
          P::each_lane(w, [&](Thread t) {
            SIMVAE_UNROLL
            for (int j = 0; j < kSlice / 8; ++j)
              SIMVAE_UNROLL
              for (int e = 0; e < 4; ++e) dk[t][j][e] = 0.0f;
          });
SIMVAE_UNROLL
          for (int ks = 0; ks < kKSteps; ++ks) {
            load_a_exchange<P, L>(w, ks, a);
SIMVAE_UNROLL
            for (int jp = 0; jp < kSlice / 16; ++jp) {
              load_b_kn<P, L>(w, L::kZi, ks, dc * kSlice / 16 + jp, b);
              P::template mma<E>(w, [&](Thread t) { return dk[t][2 * jp]; }, [&](Thread t) { return a[t]; },
                                 [&](Thread t) { return b[t]; });
              P::template mma<E>(w, [&](Thread t) { return dk[t][2 * jp + 1]; }, [&](Thread t) { return a[t]; },
                                 [&](Thread t) { return b[t] + 2; });
            }
          }
          P::each_lane(w, [&](Thread t) {
            SIMVAE_UNROLL
            for (int j = 0; j < kSlice / 8; ++j)
              SIMVAE_UNROLL
              for (int r = 0; r < 2; ++r) {
                const int64_t k = int64_t(K) * kBlockRows + 16 * w + t.group() + 8 * r;
                float* dst = args.du + k * kDims + kSlice * dc + 8 * j + 2 * t.quad();
                P::red_add2(dst, dk[t][j][2 * r], dk[t][j][2 * r + 1]);
              }
          });
        }
      });
    }
  }
  // dU_I: summed into du (symmetric sweep) or stored into this chunk's part; dscale: one value per block.
  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      SIMVAE_UNROLL
      for (int j = 0; j < kN8; ++j)
        SIMVAE_UNROLL
        for (int r = 0; r < 2; ++r) {
          const int64_t i = int64_t(I) * kBlockRows + 16 * w + t.group() + 8 * r;
          float* dst = args.du + ((kSymmetric ? 0 : chunk) * rows + i) * kDims + 8 * j + 2 * t.quad();
          if (kSymmetric) {
            P::red_add2(dst, du[t][j][2 * r], du[t][j][2 * r + 1]);
          } else {
            dst[0] = du[t][j][2 * r];
            dst[1] = du[t][j][2 * r + 1];
          }
        }
    });
    for (int mask = 1; mask < 32; mask <<= 1) {
      P::shfl_xor(w, [&](Thread t) { return ds[t]; }, [&](Thread t) -> float& { return other[t]; }, mask);
      P::each_lane(w, [&](Thread t) { ds[t] += other[t]; });
    }
    P::each_lane(w, [&](Thread t) {
      if (t.lane == 0) P::template sts<float>(t, L::kReduce + 4 * w, ds[t]);
    });
  });
  P::barrier();
  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      if (w != 0 || t.lane != 0) return;
      float total = 0.0f;
      SIMVAE_UNROLL
      for (int v = 0; v < kWarpsPerBlock; ++v) total += P::template lds<float>(t, L::kReduce + 4 * v);
      args.ds_part[block] = total;
    });
  });
}

}  // namespace tiles
}  // namespace simvae
