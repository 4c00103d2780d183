// The schedule of the InfoNCE tile kernels (info_nce_tiles.cuh) and the layout of their workspace: which block
// computes which 64 x 64 tiles of the logits, and where the partial results go. Plain C++: the CUDA launchers
// (info_nce.cu) and the host driver of the tests (tests/cuda_host/) compute the same plan.
//
// Row blocks: the N rows in nb = ceil(N / 64) blocks. s_ik = s_ki, so each unordered pair {I, K} of row blocks
// is needed once (the symmetric sweep): row block I takes the pairs (I, (I + t) mod nb) for
//     t = 0 (its diagonal tile), 1 .. floor((nb - 1) / 2), and t = nb / 2 when nb is even and I < nb / 2,
// which covers every pair exactly once with nb / 2 + 1 or fewer tiles per row block (a circulant schedule:
// every row block does the same work, within one tile). The deterministic backward instead sweeps every
// K (t = 0 .. nb - 1) for its I and writes nothing into other row blocks.
// Each row block's tiles are cut into `chunks` runs of chunk_len consecutive t, one block per (I, chunk), so
// that the grid fills the GPU at every N (a run may be empty in the rows that have one tile fewer).
#pragma once
#include <cstddef>
#include <cstdint>

#include "tile_types.h"

namespace simvae {
namespace tiles {

constexpr int kBlockRows = 64;  // rows of a row block: the tiles are 64 x 64
constexpr double kNormEps = 1e-12;

// The widest padded row the tile kernels of format E hold: 256 16-bit elements, 128 tf32 ones. A 256-wide fp32
// row block is 65 KB, so Z_I and one Z_K tile alone would be over the 113 KB a block may take when two share an
// SM, and the backward's dU_I accumulators (128 fp32 per thread at 256 dims, next to its 32 tf32 A operands)
// would not fit in 255 registers: wider fp32 rows take the exact kernels.
template <class E>
constexpr int max_dims() {
  return E::kTf32 ? 128 : 256;
}

SIMVAE_HD int tiles_in_row(int I, int nb) { return 1 + (nb - 1) / 2 + ((nb % 2 == 0 && I < nb / 2) ? 1 : 0); }

struct Sweep {
  int nb, chunks, chunk_len;
  bool symmetric;
  SIMVAE_HD int row_tiles(int I) const { return symmetric ? tiles_in_row(I, nb) : nb; }
  SIMVAE_HD int max_row_tiles() const { return symmetric ? nb / 2 + 1 : nb; }
  SIMVAE_HD int blocks() const { return nb * chunks; }
  // Tiles t in [begin, end) of block `block`.
  SIMVAE_HD void range(int block, int& I, int& begin, int& end) const {
    I = block / chunks;
    const int n = row_tiles(I);
    begin = (block % chunks) * chunk_len;
    begin = begin < n ? begin : n;
    end = begin + chunk_len < n ? begin + chunk_len : n;
  }
};

// Whether slot t of row block K's column partials holds a tile: the pair ((K - t) mod nb, K) at offset t.
SIMVAE_HD bool column_slot_used(int K, int t, int nb) { return t >= 1 && t < tiles_in_row((K - t + nb) % nb, nb); }

inline Sweep make_sweep(int nb, bool symmetric, int target_blocks) {
  Sweep s{nb, 1, 1, symmetric};
  const int tiles = s.max_row_tiles();
  int chunks = (target_blocks + nb - 1) / nb;
  chunks = chunks < 1 ? 1 : (chunks > tiles ? tiles : chunks);
  s.chunk_len = (tiles + chunks - 1) / chunks;
  s.chunks = (tiles + s.chunk_len - 1) / s.chunk_len;
  return s;
}

// The row stride of the tile kernels' z: D rounded up to 16 bytes (8 16-bit or 4 fp32 elements).
template <class E>
int64_t tile_pitch(int64_t D) {
  constexpr int64_t per16 = 16 / E::kBytes;
  return (D + per16 - 1) / per16 * per16;
}

// Padded row width the tile kernels of format E are compiled for: 32, 64, 128 (or 256 for 16-bit E) for rows
// of D elements; 0: too wide for them.
template <class E>
int tile_dims(int64_t D) {
  const int64_t pitch = tile_pitch<E>(D);
  for (int d = 32; d <= max_dims<E>(); d *= 2)
    if (pitch <= d) return d;
  return 0;
}

// One call's plan. pitch: the row stride the tile kernels read, a multiple of 16 bytes; when z's own rows are
// not (D % 8 != 0 for 16-bit z, or a misaligned base), or z is float32 (its tf32 operands must be rounded,
// tile_types.h), the row kernel first copies z into a zero-padded workspace of that pitch (E::stage of each
// element). Workspace (fp32 unless said): inv_norm [N], maxima [2] (max c_i, max |w_i|), padded z [N, pitch]
// (E's storage, when copied), and
//   forward:  row_part [chunks][rows] and col_part [max_row_tiles][rows] MaxSum (rows = nb * 64);
//   backward: du [parts][rows][dims] (parts = 1 summed by atomics, or one per chunk when deterministic),
//             ds_part [blocks], dscale_rows [N].
struct Plan {
  int64_t N, D, pitch;
  int nb, dims;
  bool copy, backward;
  Sweep sweep;
  size_t inv, maxima, zp, row_part, col_part, du, ds_part, dscale_rows, bytes;
  int64_t rows() const { return int64_t(nb) * kBlockRows; }
  int du_parts() const { return sweep.symmetric ? 1 : sweep.chunks; }
};

template <class E>
Plan make_plan(int64_t N, int64_t D, bool aligned, bool backward, bool deterministic, int target_blocks) {
  Plan p{};
  p.N = N;
  p.D = D;
  p.pitch = tile_pitch<E>(D);
  p.copy = !aligned || p.pitch != D || E::kTf32;
  p.nb = int((N + kBlockRows - 1) / kBlockRows);
  p.dims = tile_dims<E>(D);
  p.backward = backward;
  p.sweep = make_sweep(p.nb, !(backward && deterministic), target_blocks);
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  p.inv = take(4 * N);
  p.maxima = take(8);
  p.zp = take(p.copy ? size_t(E::kBytes) * N * p.pitch : 0);
  if (backward) {
    p.du = take(size_t(4) * p.du_parts() * p.rows() * p.dims);
    p.ds_part = take(4 * size_t(p.sweep.blocks()));
    p.dscale_rows = take(4 * N);
  } else {
    p.row_part = take(sizeof(MaxSum) * p.sweep.chunks * p.rows());
    p.col_part = take(sizeof(MaxSum) * p.sweep.max_row_tiles() * p.rows());
  }
  p.bytes = at;
  return p;
}

}  // namespace tiles
}  // namespace simvae
