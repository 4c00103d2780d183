// The O(N D) and O(N J D) parts of the tensor-core InfoNCE (docs/math.md §4), one warp per row, four rows per block,
// written over the same execution policies as the tiles (info_nce_tiles.cuh) so that the host tests run them.
//   prep_rows:     c_i = 1/max(||z_i||, 1e-12) (normalize) or 1; max_i c_i and max_i |w_i| for operand_scale;
//                  the zero-padded copy of z when its rows are not 16-byte multiples or z is float32, each
//                  element staged (E::stage: rounded to tf32 for the tensor cores) (info_nce_plan.h).
// Everything here reads the caller's z itself in fp32 (norms, positives, the Jacobian): with Tf32 only the
// tiles' products see rounded operands.
//   forward_rows:  lse_i = merge of the row's partials (row_part of each chunk, col_part of each used slot,
//                  in that fixed order); the positives p of i (same group, p != i): pos_i = mean_p s_ip or
//                  LSE_p s_ip; loss_i = lse_i - pos_i.
//   backward_rows: du_i = 2^-e sum of the parts of du; minus the positives' part of G + G^T,
//                  (w_i W_ip + w_p W_pi) c_p z_p with W_ip = 1/(J-1) or exp(s_ip - pos_i); times 1/tau; the
//                  F.normalize Jacobian dz_i = c_i (du_i - c_i^2 (z_i . du_i) z_i) (||z_i|| > eps; else c_i du_i).
//                  dscale_rows[i] = -sum_p w_i W_ip uu_ip.
//   dscale_sum:    dL/dtau = -(1/tau^2) (sum of the tile blocks' ds_part + sum_i dscale_rows[i]), fixed order.
#pragma once
#include <cmath>

#include "info_nce_plan.h"
#include "info_nce_tiles.cuh"
#include "tile_types.h"

namespace simvae {
namespace tiles {

struct RowProblem {
  const void* z;  // [N, D], the caller's rows
  int64_t N, D, J;
  const float* temperature;
  const float* inv_norm;
  bool normalize, positives_lse;
};

struct PrepArgs {
  RowProblem p;
  const float* w;  // nullptr in the forward
  float* inv_norm;
  float* maxima;   // zeroed by the caller
  void* zp;        // nullptr, or [N, pitch] of E::Bits
  int64_t pitch;
};

struct ForwardRowArgs {
  RowProblem p;
  Sweep sweep;
  const MaxSum* row_part;
  const MaxSum* col_part;
  float *lse, *pos, *loss;
};

struct BackwardRowArgs {
  RowProblem p;
  const float* w;
  const float* pos;
  const float* maxima;
  float* du;  // [parts][rows][dims]
  int parts, dims;
  int64_t rows;
  float* dscale_rows;
  void* dz;  // [N, D] of E::Bits
};

template <class P, class V>
SIMVAE_TILE void warp_allsum(int w, V& v, V& other) {
  for (int mask = 16; mask > 0; mask >>= 1) {
    P::shfl_xor(w, [&](Thread t) { return v[t]; }, [&](Thread t) -> float& { return other[t]; }, mask);
    P::each_lane(w, [&](Thread t) { v[t] += other[t]; });
  }
}

// dot[t] = z_a . z_b (every lane).
template <class P, class E, class V>
SIMVAE_TILE void warp_dot(int w, const RowProblem& p, int64_t a, int64_t b, V& dot, V& other) {
  P::each_lane(w, [&](Thread t) {
    float acc = 0.0f;
    for (int64_t d = t.lane; d < p.D; d += 32) acc += load_elem<E>(p.z, a * p.D + d) * load_elem<E>(p.z, b * p.D + d);
    dot[t] = acc;
  });
  warp_allsum<P>(w, dot, other);
}

template <class P, class E>
SIMVAE_TILE void prep_rows(const PrepArgs& a, int block) {
  typename P::template PerThread<float> sq, other;
  P::each_warp([&](int w) {
    const int64_t i = int64_t(block) * kWarpsPerBlock + w;
    if (i >= a.p.N) return;
    const RowProblem& p = a.p;
    P::each_lane(w, [&](Thread t) {
      using Bits = typename E::Bits;
      if (a.zp != nullptr)
        for (int64_t d = t.lane; d < a.pitch; d += 32) {
          const Bits v = d < p.D ? E::stage(static_cast<const Bits*>(p.z)[i * p.D + d]) : Bits(0);
          static_cast<Bits*>(a.zp)[i * a.pitch + d] = v;
        }
    });
    warp_dot<P, E>(w, p, i, i, sq, other);
    P::each_lane(w, [&](Thread t) {
      if (t.lane != 0) return;
      const float c = p.normalize ? 1.0f / fmaxf(sqrtf(sq[t]), float(kNormEps)) : 1.0f;
      a.inv_norm[i] = c;
      P::atomic_max_nonnegative(a.maxima, c);
      if (a.w != nullptr) P::atomic_max_nonnegative(a.maxima + 1, fabsf(a.w[i]));
    });
  });
}

template <class P, class E>
SIMVAE_TILE void forward_rows(const ForwardRowArgs& a, int block) {
  typename P::template PerThread<float> m, l, om, ol, dot, other, total, pm, pl;
  P::each_warp([&](int w) {
    const RowProblem& p = a.p;
    const int64_t i = int64_t(block) * kWarpsPerBlock + w;
    if (i >= p.N) return;
    const Sweep& sw = a.sweep;
    const int64_t rows = int64_t(sw.nb) * kBlockRows;
    const int K = int(i / kBlockRows), parts = sw.chunks + sw.max_row_tiles();
    P::each_lane(w, [&](Thread t) {
      MaxSum acc{kNegInf, 0.0f};
      for (int q = t.lane; q < parts; q += 32) {
        if (q < sw.chunks)
          acc = merge_parts(acc, a.row_part[q * rows + i]);
        else if (column_slot_used(K, q - sw.chunks, sw.nb))
          acc = merge_parts(acc, a.col_part[(q - sw.chunks) * rows + i]);
      }
      m[t] = acc.m;
      l[t] = acc.l;
    });
    for (int mask = 16; mask > 0; mask >>= 1) {
      P::shfl_xor(w, [&](Thread t) { return m[t]; }, [&](Thread t) -> float& { return om[t]; }, mask);
      P::shfl_xor(w, [&](Thread t) { return l[t]; }, [&](Thread t) -> float& { return ol[t]; }, mask);
      P::each_lane(w, [&](Thread t) {
        const MaxSum merged = merge_parts({m[t], l[t]}, {om[t], ol[t]});
        m[t] = merged.m;
        l[t] = merged.l;
      });
    }
    const float scale = 1.0f / *p.temperature;
    P::each_lane(w, [&](Thread t) {
      total[t] = 0.0f;
      pm[t] = kNegInf;
      pl[t] = 0.0f;
    });
    const int64_t g0 = i / p.J * p.J;
    for (int64_t q = g0; q < g0 + p.J; ++q) {
      if (q == i) continue;
      warp_dot<P, E>(w, p, i, q, dot, other);
      P::each_lane(w, [&](Thread t) {
        const float v = scale * p.inv_norm[i] * p.inv_norm[q] * dot[t];
        total[t] += v;
        const float m_new = fmaxf(pm[t], v);
        pl[t] = pl[t] * expf(pm[t] - m_new) + expf(v - m_new);
        pm[t] = m_new;
      });
    }
    P::each_lane(w, [&](Thread t) {
      if (t.lane != 0) return;
      const float lse = (m[t] + log2f(l[t])) / kLog2e;
      const float pos = p.positives_lse ? pm[t] + logf(pl[t]) + (total[t] - total[t]) : total[t] / float(p.J - 1);
      a.lse[i] = lse;
      a.pos[i] = pos;
      a.loss[i] = lse - pos;
    });
  });
}

template <class P, class E>
SIMVAE_TILE void backward_rows(const BackwardRowArgs& a, int block) {
  typename P::template PerThread<float> dot, other, ds;
  P::each_warp([&](int w) {
    const RowProblem& p = a.p;
    const int64_t i = int64_t(block) * kWarpsPerBlock + w;
    if (i >= p.N) return;
    const float scale = 1.0f / *p.temperature, unscale = 1.0f / operand_scale(a.maxima);
    float* du = a.du + i * a.dims;  // part 0's row, which collects the result
    P::each_lane(w, [&](Thread t) {
      for (int64_t d = t.lane; d < p.D; d += 32) {
        float v = 0.0f;
        for (int q = 0; q < a.parts; ++q) v += a.du[(q * a.rows + i) * a.dims + d];
        du[d] = v * unscale;
      }
      ds[t] = 0.0f;
    });
    const int64_t g0 = i / p.J * p.J;
    for (int64_t q = g0; q < g0 + p.J; ++q) {
      if (q == i) continue;
      warp_dot<P, E>(w, p, i, q, dot, other);
      P::each_lane(w, [&](Thread t) {
        const float uu = p.inv_norm[i] * p.inv_norm[q] * dot[t];
        const float w_iq = p.positives_lse ? expf(scale * uu - a.pos[i]) : 1.0f / float(p.J - 1);
        const float w_qi = p.positives_lse ? expf(scale * uu - a.pos[q]) : 1.0f / float(p.J - 1);
        const float coeff = (a.w[i] * w_iq + a.w[q] * w_qi) * p.inv_norm[q];
        ds[t] -= a.w[i] * w_iq * uu;
        for (int64_t d = t.lane; d < p.D; d += 32) du[d] -= coeff * load_elem<E>(p.z, q * p.D + d);
      });
    }
    const float c = p.inv_norm[i];
    P::each_lane(w, [&](Thread t) {
      float acc = 0.0f;
      if (p.normalize)
        for (int64_t d = t.lane; d < p.D; d += 32) acc += load_elem<E>(p.z, i * p.D + d) * du[d] * scale;
      dot[t] = acc;
    });
    warp_allsum<P>(w, dot, other);
    P::each_lane(w, [&](Thread t) {
      const float proj = p.normalize && c < float(1.0 / kNormEps) ? c * c * dot[t] : 0.0f;
      for (int64_t d = t.lane; d < p.D; d += 32) {
        float g = du[d] * scale;
        if (p.normalize) g = (g - proj * load_elem<E>(p.z, i * p.D + d)) * c;
        store_elem<E>(a.dz, i * p.D + d, g);
      }
      if (t.lane == 0) a.dscale_rows[i] = ds[t];
    });
  });
}

// One block: grad_temperature = -(1/tau^2) (sum ds_part + sum dscale_rows). Shared memory: 4 floats.
template <class P>
SIMVAE_TILE void dscale_sum(const float* ds_part, int64_t parts, const float* dscale_rows, int64_t N,
                            const float* temperature, float* grad_temperature) {
  typename P::template PerThread<float> v, other;
  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      float acc = 0.0f;
      for (int64_t q = 32 * w + t.lane; q < parts + N; q += kThreadsPerBlock)
        acc += q < parts ? ds_part[q] : dscale_rows[q - parts];
      v[t] = acc;
    });
    warp_allsum<P>(w, v, other);
    P::each_lane(w, [&](Thread t) {
      if (t.lane == 0) P::template sts<float>(t, 4 * w, v[t]);
    });
  });
  P::barrier();
  P::each_warp([&](int w) {
    P::each_lane(w, [&](Thread t) {
      if (w != 0 || t.lane != 0) return;
      float total = 0.0f;
      for (int q = 0; q < kWarpsPerBlock; ++q) total += P::template lds<float>(t, 4 * q);
      const float scale = 1.0f / *temperature;
      *grad_temperature = -total * scale * scale;
    });
  });
}

}  // namespace tiles
}  // namespace simvae
