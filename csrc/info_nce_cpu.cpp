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
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kTileRows = 32;  // a [32, N] logits tile per thread: O(N * tile * threads) memory
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

// f(k) for k in [0, N) except k = skip (two plain loops, no branch inside).
template <typename F>
inline void for_all_but(int64_t N, int64_t skip, F f) {
  for (int64_t k = 0; k < skip; ++k) f(k);
  for (int64_t k = skip + 1; k < N; ++k) f(k);
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
      const acc_t a = scale * inv[i];
      acc_t m = -std::numeric_limits<acc_t>::infinity();
      for_all_but(N, i, [&](int64_t k) { m = std::max(m, a * inv[k] * Si[k]); });
      acc_t sum = 0;  // a NaN logit (NaN in z) makes sum, hence lse_i, NaN
      for_all_but(N, i, [&](int64_t k) { sum += std::exp(a * inv[k] * Si[k] - m); });
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
      acc_t ds = 0;
      for_all_but(N, i, [&](int64_t k) {
        const acc_t uu = inv[i] * inv[k] * Mi[k];  // u_i . u_k
        const acc_t g_ik = w[i] * std::exp(scale * uu - lse[i]);
        const acc_t g_ki = w[k] * std::exp(scale * uu - lse[k]);
        ds += g_ik * uu;
        Mi[k] = (g_ik + g_ki) * inv[k];
      });
      Mi[i] = 0;
      row_dscale[i] = ds;
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
