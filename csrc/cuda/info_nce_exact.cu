// InfoNCE / NT-Xent CUDA kernels on CUDA cores (docs/math.md §4; not the symmetric tiles of §4.1): the exact
// path, for float64 and float32 (and for half-precision rows wider than the tensor-core kernels take, upcast to
// float32 by info_nce_cuda.cpp). Tiled, shared memory, fp32 accumulation (fp64 for fp64), no N x N buffer.
// Torch-free: compile-checked with plain nvcc.
// Not the fast path: it streams every column tile for every row block (2 N^2 D forward FLOPs) and its backward
// recomputes the tiles once per 64 output dims; float64 spills (a simple, exact path is all it is for).
//
// Notation: z_i the N = G*J rows, c_i = 1/max(||z_i||, 1e-12) with normalize (F.normalize) else 1,
// u_i = c_i z_i, scale = 1/tau, s_ik = scale c_i c_k (z_i . z_k): products on z, norms as row/column factors.
//
// lse_kernel (forward): a block owns BM = 64 rows and streams BN = 64 column tiles. Each tile S = Z_I Z_K^T is
// accumulated in registers (16 x 16 threads, 4 x 4 each, strided so shared reads are conflict-free) from BK-wide
// slices staged in shared memory. Each thread keeps an online (max m, sum l) per row over its columns,
//     m' = max(m, max_k s_ik),  l' = l exp(m - m') + sum_k exp(s_ik - m')    (k != i),
// and the 16 threads of a row merge theirs with warp shuffles: lse_i = m + log l. Stable for every tau and for
// unnormalised rows. A NaN logit is carried by `poison` (s - s), so lse_i is NaN whenever a logit is.
// positives_forward_kernel: one warp per row, O(J D): pos_i = mean_p s_ip or LSE_p s_ip, loss_i = lse_i - pos_i.
//
// Backward, w_i = dloss/dloss_i, P_ik = exp(s_ik - lse_i), W_ip = 1/(J-1) or exp(s_ip - pos_i),
// G_ik = w_i (P_ik - W_ik):
//     dL/du_i = scale sum_k (G_ik + G_ki) u_k,  dL/dscale = sum_ik G_ik (u_i . u_k),  dL/dtau = -scale^2 dL/dscale.
// grad_tile_kernel: a block owns (BM rows, DC = 64 output dims); it recomputes each tile S[I, K] once and, since s
// is symmetric and lse_k is known for every row, forms both w_i exp(s_ik - lse_i) and w_k exp(s_ik - lse_k);
// M = (G + G^T)[I, K] c_K goes to shared memory and du_I += M Z_K[:, dims]. Each block owns its rows of du: no
// atomics, deterministic (2 N^2 exps, 4 N^2 D flops; tiles recomputed once per 64 output dims).
// finish_backward_kernel: one warp per row adds the positives' part -scale sum_p (w_i W_ip + w_p W_pi) u_p, scales,
// and applies the F.normalize Jacobian dz_i = c_i (du_i - c_i^2 (z_i . du_i) z_i) (||z_i|| > eps; else c_i du_i).
// dscale_kernel sums the per-row dL/dscale parts in a fixed order.
#include <cmath>

#include "info_nce_exact.h"

namespace simvae {
namespace {

constexpr int BM = 64, BN = 64, BK = 8, DC = 64, TPB = 16, TM = BM / TPB, TN = BN / TPB, TD = DC / TPB;
constexpr int kWarpRows = 8;  // rows per 256-thread block in the one-warp-per-row kernels
constexpr double kNormEps = 1e-12;

__device__ inline float to_acc(float x) { return x; }
__device__ inline double to_acc(double x) { return x; }

template <typename T> __device__ inline T from_acc(float x);
template <> __device__ inline float from_acc<float>(float x) { return x; }
template <typename T> __device__ inline T from_acc(double x) { return x; }

template <typename Acc>
__device__ inline Acc warp_sum(Acc v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// z_a . z_b by one warp.
template <typename T, typename Acc>
__device__ inline Acc warp_dot(const T* a, const T* b, int64_t D, int lane) {
  Acc s = 0;
  for (int64_t d = lane; d < D; d += 32) s += to_acc(a[d]) * to_acc(b[d]);
  return warp_sum(s);
}

template <typename T, typename Acc>
__global__ void inverse_norm_kernel(const T* z, int64_t N, int64_t D, bool normalize, Acc* inv) {
  const int64_t i = int64_t(blockIdx.x) * kWarpRows + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (i >= N) return;
  const Acc sq = normalize ? warp_dot<T, Acc>(z + i * D, z + i * D, D, lane) : Acc(1);
  if (lane == 0) inv[i] = normalize ? Acc(1) / fmax(sqrt(sq), Acc(kNormEps)) : Acc(1);
}

// acc[r][c] = z_{row0 + ty + 16 r} . z_{col0 + tx + 16 c} (zero outside the matrix).
template <typename T, typename Acc>
__device__ inline void logit_tile(const T* z, int64_t N, int64_t D, int64_t row0, int64_t col0,
                                  Acc (*As)[BM], Acc (*Bs)[BN], Acc acc[TM][TN]) {
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TPB + tx;
  for (int r = 0; r < TM; ++r)
    for (int c = 0; c < TN; ++c) acc[r][c] = 0;
  for (int64_t k0 = 0; k0 < D; k0 += BK) {
    for (int e = tid; e < BM * BK; e += TPB * TPB) {
      const int m = e / BK, kk = e % BK;
      const int64_t k = k0 + kk, row = row0 + m, col = col0 + m;
      As[kk][m] = (row < N && k < D) ? to_acc(z[row * D + k]) : Acc(0);
      Bs[kk][m] = (col < N && k < D) ? to_acc(z[col * D + k]) : Acc(0);
    }
    __syncthreads();
    for (int kk = 0; kk < BK; ++kk) {
      Acc a[TM], b[TN];
      for (int r = 0; r < TM; ++r) a[r] = As[kk][ty + TPB * r];
      for (int c = 0; c < TN; ++c) b[c] = Bs[kk][tx + TPB * c];
      for (int r = 0; r < TM; ++r)
        for (int c = 0; c < TN; ++c) acc[r][c] += a[r] * b[c];
    }
    __syncthreads();
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(TPB * TPB)
    lse_kernel(const T* z, int64_t N, int64_t D, const Acc* temperature, const Acc* inv, Acc* lse) {
  __shared__ Acc As[BK][BM];
  __shared__ Acc Bs[BK][BN];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row0 = int64_t(blockIdx.x) * BM;
  const Acc scale = Acc(1) / *temperature;
  const Acc neg_inf = -INFINITY;
  Acc a[TM], m[TM], l[TM], poison[TM];
  for (int r = 0; r < TM; ++r) {
    const int64_t i = row0 + ty + TPB * r;
    a[r] = i < N ? scale * inv[i] : Acc(0);
    m[r] = neg_inf;
    l[r] = 0;
    poison[r] = 0;
  }
  for (int64_t col0 = 0; col0 < N; col0 += BN) {
    Acc acc[TM][TN];
    logit_tile<T, Acc>(z, N, D, row0, col0, As, Bs, acc);
    for (int r = 0; r < TM; ++r) {
      const int64_t i = row0 + ty + TPB * r;
      Acc s[TN];
      Acc tile_max = neg_inf;
      for (int c = 0; c < TN; ++c) {
        const int64_t k = col0 + tx + TPB * c;
        const bool valid = k < N && k != i;
        s[c] = valid ? a[r] * inv[k] * acc[r][c] : neg_inf;
        if (valid) poison[r] += s[c] - s[c];
        tile_max = fmax(tile_max, s[c]);
      }
      const Acc m_new = fmax(m[r], tile_max);
      if (m_new == neg_inf) continue;  // no valid column seen yet
      Acc sum = 0;
      for (int c = 0; c < TN; ++c) sum += s[c] == neg_inf ? Acc(0) : exp(s[c] - m_new);
      l[r] = l[r] * exp(m[r] - m_new) + sum;
      m[r] = m_new;
    }
  }
  // Merge the 16 partial (m, l) of each row: lanes tx ^ offset share ty (16 threads per row, 2 rows per warp).
  for (int r = 0; r < TM; ++r) {
    for (int offset = TPB / 2; offset > 0; offset >>= 1) {
      const Acc m_o = __shfl_xor_sync(0xffffffffu, m[r], offset);
      const Acc l_o = __shfl_xor_sync(0xffffffffu, l[r], offset);
      poison[r] += __shfl_xor_sync(0xffffffffu, poison[r], offset);
      const Acc m_new = fmax(m[r], m_o);
      if (m_new != neg_inf) l[r] = l[r] * exp(m[r] - m_new) + l_o * exp(m_o - m_new);
      m[r] = m_new;
    }
    const int64_t i = row0 + ty + TPB * r;
    if (tx == 0 && i < N) lse[i] = m[r] + log(l[r]) + poison[r];
  }
}

template <typename T, typename Acc>
__global__ void positives_forward_kernel(const T* z, int64_t N, int64_t D, int64_t J, const Acc* temperature,
                                         const Acc* inv, bool positives_lse, const Acc* lse, Acc* loss, Acc* pos) {
  const int64_t i = int64_t(blockIdx.x) * kWarpRows + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (i >= N) return;
  const Acc scale = Acc(1) / *temperature;
  const int64_t g0 = (i / J) * J;
  Acc total = 0, m = -INFINITY, l = 0;
  for (int64_t p = g0; p < g0 + J; ++p) {
    if (p == i) continue;
    const Acc s = scale * inv[i] * inv[p] * warp_dot<T, Acc>(z + i * D, z + p * D, D, lane);
    total += s;
    const Acc m_new = fmax(m, s);
    l = l * exp(m - m_new) + exp(s - m_new);
    m = m_new;
  }
  if (lane != 0) return;
  pos[i] = positives_lse ? m + log(l) + (total - total) : total / Acc(J - 1);
  loss[i] = lse[i] - pos[i];
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(TPB * TPB)
    grad_tile_kernel(const T* z, int64_t N, int64_t D, const Acc* temperature, const Acc* inv, const Acc* w,
                     const Acc* lse, Acc* du, Acc* dscale_rows) {
  __shared__ Acc As[BK][BM];
  __shared__ Acc Bs[BK][BN];
  __shared__ Acc M[BM][BN];
  __shared__ Acc Zs[BK][DC];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TPB + tx;
  const int64_t row0 = int64_t(blockIdx.x) * BM, d0 = int64_t(blockIdx.y) * DC;
  const Acc scale = Acc(1) / *temperature;
  Acc out[TM][TD] = {};
  Acc ds[TM] = {};
  for (int64_t col0 = 0; col0 < N; col0 += BN) {
    Acc acc[TM][TN];
    logit_tile<T, Acc>(z, N, D, row0, col0, As, Bs, acc);
    for (int r = 0; r < TM; ++r) {
      const int64_t i = row0 + ty + TPB * r;
      for (int c = 0; c < TN; ++c) {
        const int64_t k = col0 + tx + TPB * c;
        Acc value = 0;
        if (i < N && k < N && k != i) {
          const Acc uu = inv[i] * inv[k] * acc[r][c];
          const Acc g_ik = w[i] * exp(scale * uu - lse[i]);
          const Acc g_ki = w[k] * exp(scale * uu - lse[k]);
          ds[r] += g_ik * uu;
          value = (g_ik + g_ki) * inv[k];
        }
        M[ty + TPB * r][tx + TPB * c] = value;
      }
    }
    __syncthreads();
    for (int k0 = 0; k0 < BN; k0 += BK) {
      for (int e = tid; e < BK * DC; e += TPB * TPB) {
        const int kk = e / DC, dd = e % DC;
        const int64_t k = col0 + k0 + kk, d = d0 + dd;
        Zs[kk][dd] = (k < N && d < D) ? to_acc(z[k * D + d]) : Acc(0);
      }
      __syncthreads();
      for (int kk = 0; kk < BK; ++kk) {
        Acc zz[TD];
        for (int c = 0; c < TD; ++c) zz[c] = Zs[kk][tx + TPB * c];
        for (int r = 0; r < TM; ++r) {
          const Acc mv = M[ty + TPB * r][k0 + kk];
          for (int c = 0; c < TD; ++c) out[r][c] += mv * zz[c];
        }
      }
      __syncthreads();
    }
  }
  for (int r = 0; r < TM; ++r) {
    const int64_t i = row0 + ty + TPB * r;
    for (int offset = TPB / 2; offset > 0; offset >>= 1) ds[r] += __shfl_xor_sync(0xffffffffu, ds[r], offset);
    if (i >= N) continue;
    if (blockIdx.y == 0 && tx == 0) dscale_rows[i] = ds[r];
    for (int c = 0; c < TD; ++c) {
      const int64_t d = d0 + tx + TPB * c;
      if (d < D) du[i * D + d] = out[r][c];
    }
  }
}

template <typename T, typename Acc>
__global__ void finish_backward_kernel(const T* z, int64_t N, int64_t D, int64_t J, const Acc* temperature,
                                       const Acc* inv, const Acc* w, const Acc* pos, bool normalize,
                                       bool positives_lse, Acc* du, Acc* dscale_rows, T* dz) {
  const int64_t i = int64_t(blockIdx.x) * kWarpRows + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (i >= N) return;
  const Acc scale = Acc(1) / *temperature;
  const int64_t g0 = (i / J) * J;
  const T* zi = z + i * D;
  Acc* di = du + i * D;
  Acc ds = 0;
  for (int64_t p = g0; p < g0 + J; ++p) {
    if (p == i) continue;
    const Acc uu = inv[i] * inv[p] * warp_dot<T, Acc>(zi, z + p * D, D, lane);
    const Acc w_ip = positives_lse ? exp(scale * uu - pos[i]) : Acc(1) / Acc(J - 1);
    const Acc w_pi = positives_lse ? exp(scale * uu - pos[p]) : Acc(1) / Acc(J - 1);
    const Acc coeff = (w[i] * w_ip + w[p] * w_pi) * inv[p];
    ds -= w[i] * w_ip * uu;
    for (int64_t d = lane; d < D; d += 32) di[d] -= coeff * to_acc(z[p * D + d]);
  }
  __syncwarp();
  if (lane == 0) dscale_rows[i] += ds;
  const Acc c = inv[i];
  Acc proj = 0;
  if (normalize) {
    Acc zd = 0;
    for (int64_t d = lane; d < D; d += 32) zd += to_acc(zi[d]) * di[d] * scale;
    zd = warp_sum(zd);
    proj = c < Acc(1.0 / kNormEps) ? c * c * zd : Acc(0);
  }
  for (int64_t d = lane; d < D; d += 32) {
    Acc g = di[d] * scale;
    if (normalize) g = (g - proj * to_acc(zi[d])) * c;
    dz[i * D + d] = from_acc<T>(g);
  }
}

template <typename Acc>
__global__ void dscale_kernel(const Acc* dscale_rows, int64_t N, const Acc* temperature, Acc* grad_temperature) {
  __shared__ Acc partial[256];
  Acc s = 0;
  for (int64_t i = threadIdx.x; i < N; i += 256) s += dscale_rows[i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int half = 128; half > 0; half >>= 1) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const Acc scale = Acc(1) / *temperature;
    *grad_temperature = -partial[0] * scale * scale;
  }
}

template <typename T, typename Acc>
void forward_typed(const T* z, int64_t N, int64_t D, int64_t J, const Acc* temperature, bool normalize,
                   bool positives_lse, Acc* inv, Acc* loss, Acc* lse, Acc* pos, cudaStream_t stream) {
  const unsigned warp_blocks = unsigned((N + kWarpRows - 1) / kWarpRows);
  inverse_norm_kernel<T, Acc><<<warp_blocks, 32 * kWarpRows, 0, stream>>>(z, N, D, normalize, inv);
  lse_kernel<T, Acc><<<unsigned((N + BM - 1) / BM), dim3(TPB, TPB), 0, stream>>>(z, N, D, temperature, inv, lse);
  positives_forward_kernel<T, Acc><<<warp_blocks, 32 * kWarpRows, 0, stream>>>(z, N, D, J, temperature, inv,
                                                                                positives_lse, lse, loss, pos);
}

template <typename T, typename Acc>
void backward_typed(const Acc* w, const T* z, int64_t N, int64_t D, int64_t J, const Acc* temperature,
                    const Acc* lse, const Acc* pos, bool normalize, bool positives_lse, Acc* inv, Acc* du,
                    Acc* dscale_rows, T* dz, Acc* grad_temperature, cudaStream_t stream) {
  const unsigned warp_blocks = unsigned((N + kWarpRows - 1) / kWarpRows);
  inverse_norm_kernel<T, Acc><<<warp_blocks, 32 * kWarpRows, 0, stream>>>(z, N, D, normalize, inv);
  const dim3 grid(unsigned((N + BM - 1) / BM), unsigned((D + DC - 1) / DC));
  grad_tile_kernel<T, Acc><<<grid, dim3(TPB, TPB), 0, stream>>>(z, N, D, temperature, inv, w, lse, du, dscale_rows);
  finish_backward_kernel<T, Acc><<<warp_blocks, 32 * kWarpRows, 0, stream>>>(
      z, N, D, J, temperature, inv, w, pos, normalize, positives_lse, du, dscale_rows, dz);
  dscale_kernel<Acc><<<1, 256, 0, stream>>>(dscale_rows, N, temperature, grad_temperature);
}

}  // namespace

#define SIMVAE_INFO_NCE_DISPATCH(dtype, CALL)                                     \
  switch (dtype) {                                                                \
    case Dtype::kFloat32: { using T = float; using Acc = float; CALL; break; }   \
    case Dtype::kFloat64: { using T = double; using Acc = double; CALL; break; } \
    default: return cudaErrorInvalidValue;                                        \
  }

cudaError_t info_nce_forward_exact(Dtype dtype, const void* z, int64_t N, int64_t D, int64_t J,
                                  const void* temperature, bool normalize, bool positives_logsumexp,
                                  void* inv_norm, void* loss, void* lse, void* pos, cudaStream_t stream) {
  SIMVAE_INFO_NCE_DISPATCH(dtype, (forward_typed<T, Acc>(
      static_cast<const T*>(z), N, D, J, static_cast<const Acc*>(temperature), normalize, positives_logsumexp,
      static_cast<Acc*>(inv_norm), static_cast<Acc*>(loss), static_cast<Acc*>(lse), static_cast<Acc*>(pos), stream)))
  return cudaGetLastError();
}

cudaError_t info_nce_backward_exact(Dtype dtype, const void* grad_loss, const void* z, int64_t N, int64_t D,
                                   int64_t J, const void* temperature, const void* lse, const void* pos,
                                   bool normalize, bool positives_logsumexp, void* inv_norm, void* du,
                                   void* dscale_rows, void* grad_z, void* grad_temperature, cudaStream_t stream) {
  SIMVAE_INFO_NCE_DISPATCH(dtype, (backward_typed<T, Acc>(
      static_cast<const Acc*>(grad_loss), static_cast<const T*>(z), N, D, J, static_cast<const Acc*>(temperature),
      static_cast<const Acc*>(lse), static_cast<const Acc*>(pos), normalize, positives_logsumexp,
      static_cast<Acc*>(inv_norm), static_cast<Acc*>(du), static_cast<Acc*>(dscale_rows), static_cast<T*>(grad_z),
      static_cast<Acc*>(grad_temperature), stream)))
  return cudaGetLastError();
}

}  // namespace simvae
