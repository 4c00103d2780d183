"""Triton kernels for InfoNCE / NT-Xent over groups of views (math doc §4), flash-style: no N x N tensor.

Notation. z: [G, J, D] as N = G*J rows z_i; c_i = 1/max(||z_i||, 1e-12) with normalize (F.normalize), else 1;
u_i = c_i z_i; scale = 1/tau (read from the temperature tensor on the device: no host sync);
s_ik = scale * c_i c_k (z_i . z_k). The products run on z itself (bf16/fp16 on the tensor cores, fp32 with
input_precision="ieee", i.e. no TF32) with fp32 accumulation (fp64 for fp64 z); the norms enter as
row/column factors. Under TRITON_INTERPRET=1 bf16/fp16 tiles are upcast to fp32 right after each load
(the interpreter's bf16 arithmetic is wrong).

Forward (_forward_kernel, one program per BLOCK_M rows, streaming BLOCK_N column tiles):
    m <- max(m, max_k s_ik),  l <- l exp(m_old - m) + sum_k exp(s_ik - m)   over k != i (online LSE)
    lse_i = m + log l     -- stable for every tau and unnormalised rows; a NaN logit makes l NaN.
  Positives apart, O(BLOCK_M J D) per program: s_ip for the J-1 partners p of i,
    pos_i = mean_p s_ip  or  LSE_p s_ip;   loss_i = lse_i - pos_i.
Backward (_backward_kernel) with w_i = dloss/dloss_i, P_ik = exp(s_ik - lse_i), W_ip = 1/(J-1) or
exp(s_ip - pos_i), G_ik = w_i (P_ik - W_ik):
    dL/du_i = scale sum_k (G_ik + G_ki) u_k,   dL/dscale = sum_ik G_ik (u_i . u_k),   dL/dtau = -dL/dscale / tau^2
  One program per (BLOCK_M rows, BLOCK_DV output dims) recomputes each tile S[I, K] once and, since s is
  symmetric and every lse_k is known, forms both G_IK = w_I exp(S - lse_I) and G_KI^T = w_K exp(S - lse_K)
  from it: du_I += (G_IK + G_KI^T) c_K Z_K. Each program owns its rows of du, so no atomics and a
  deterministic result, for 2 N^2 exps and 4 N^2 D flops (the atomic half-triangle variant would save half
  the exps and a quarter of the flops but accumulate columns with fp32 atomics, non-deterministically).
  Precision limit of this scheme: the forward computed lse_k from the tile S[K, I], the backward reuses S[I, K]
  for exp(s_ki - lse_k), and a dot product's float32 rounding need not be symmetric, so P_ki carries a relative
  error up to about an ulp of the largest logit: negligible for normalised rows (|s| <= 1/tau), visible only
  for huge unnormalised logits (~4% of the gradient at |s| ~ 1e6; tests/test_extremes.py).
  When D > BLOCK_DV the tile is recomputed per D chunk. The positives' part of G + G^T
  (-w_i W_ip - w_p W_pi on the J-1 partners) is added per row, O(J D).
  _finish_backward_kernel: dL/dz_i = c_i (du_i - c_i^2 (z_i . du_i) z_i) for ||z_i|| > eps (normalize),
  c_i du_i otherwise — the F.normalize Jacobian.
Extra memory: inverse norms, lse, pos, w ([N] each), du [N, D] in the accumulation dtype, dscale per row.
"""
import torch
import triton
import triton.language as tl

from simvae_fast.backends import interpreting

NORM_EPS = 1e-12
BLOCK_M = 64
BLOCK_N = 64
BLOCK_D = 64  # reduction chunk of the s_ik products
BLOCK_ROWS = 32  # rows per program of the O(N D) kernels


@triton.jit
def _load_rows(Z, rows, dims, N, D, UPCAST: tl.constexpr):
    x = tl.load(Z + rows[:, None] * D + dims[None, :], mask=(rows < N)[:, None] & (dims < D)[None, :], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _logit_tile(Z, rows, cols, N, D, ACC: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Z[rows] Z[cols]^T in the accumulation dtype."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        a = _load_rows(Z, rows, dims, N, D, UPCAST)
        b = _load_rows(Z, cols, dims, N, D, UPCAST)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION, out_dtype=ACC)
    return acc


@triton.jit
def _row_dot(Z, rows, partners, N, D, ACC: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """z_rows . z_partners, row by row, in the accumulation dtype."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        a = _load_rows(Z, rows, dims, N, D, False).to(ACC)
        b = _load_rows(Z, partners, dims, N, D, False).to(ACC)
        acc += tl.sum(a * b, axis=1)
    return acc


@triton.jit
def _inverse_norm_kernel(Z, INV, N, D, NORMALIZE: tl.constexpr, EPS: tl.constexpr,
                         BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    ACC: tl.constexpr = INV.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    if NORMALIZE:
        inv = 1.0 / tl.maximum(tl.sqrt(_row_dot(Z, rows, rows, N, D, ACC, BLOCK_ROWS, BLOCK_D)), EPS)
    else:
        inv = tl.full([BLOCK_ROWS], 1.0, dtype=ACC)
    tl.store(INV + rows, inv.to(ACC), mask=rows < N)


@triton.jit
def _forward_kernel(Z, INV, TEMP, LOSS, LSE, POS, N, D, J: tl.constexpr, POSITIVES_LSE: tl.constexpr,
                    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    ACC: tl.constexpr = INV.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    scale = 1.0 / tl.load(TEMP)
    a = tl.load(INV + rows, mask=row_ok, other=0.0) * scale

    m = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l = tl.zeros([BLOCK_M], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        inv_c = tl.load(INV + cols, mask=cols < N, other=0.0)
        s = _logit_tile(Z, rows, cols, N, D, ACC, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D)
        s = s * a[:, None] * inv_c[None, :]
        valid = (cols < N)[None, :] & (rows[:, None] != cols[None, :])
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    lse = m + tl.log(l)

    view = rows % J
    first = rows - view
    total = tl.zeros([BLOCK_M], dtype=ACC)
    pm = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    pl = tl.zeros([BLOCK_M], dtype=ACC)
    for p in tl.static_range(1, J):
        partner = first + (view + p) % J
        inv_p = tl.load(INV + partner, mask=row_ok, other=0.0)
        s = _row_dot(Z, rows, partner, N, D, ACC, BLOCK_M, BLOCK_D) * a * inv_p
        total += s
        pm_new = tl.maximum(pm, s)
        pl = pl * tl.exp(pm - pm_new) + tl.exp(s - pm_new)
        pm = pm_new
    if POSITIVES_LSE:
        pos = pm + tl.log(pl) + (total - total)  # + 0, or NaN when a positive logit is NaN
    else:
        pos = total / (J - 1)
    tl.store(LSE + rows, lse, mask=row_ok)
    tl.store(POS + rows, pos, mask=row_ok)
    tl.store(LOSS + rows, lse - pos, mask=row_ok)


@triton.jit
def _backward_kernel(Z, INV, TEMP, W, LSE, POS, DU, DSCALE, N, D, J: tl.constexpr, POSITIVES_LSE: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    ACC: tl.constexpr = INV.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    dv = tl.program_id(1) * BLOCK_DV + tl.arange(0, BLOCK_DV)
    row_ok = rows < N
    scale = 1.0 / tl.load(TEMP)
    inv_r = tl.load(INV + rows, mask=row_ok, other=0.0)
    lse_r = tl.load(LSE + rows, mask=row_ok, other=0.0)
    w_r = tl.load(W + rows, mask=row_ok, other=0.0)

    du = tl.zeros([BLOCK_M, BLOCK_DV], dtype=ACC)
    ds = tl.zeros([BLOCK_M], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        inv_c = tl.load(INV + cols, mask=col_ok, other=0.0)
        lse_c = tl.load(LSE + cols, mask=col_ok, other=0.0)
        w_c = tl.load(W + cols, mask=col_ok, other=0.0)
        uu = _logit_tile(Z, rows, cols, N, D, ACC, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D)
        uu = uu * inv_r[:, None] * inv_c[None, :]
        s = uu * scale
        valid = col_ok[None, :] & (rows[:, None] != cols[None, :])
        g_ik = tl.where(valid, w_r[:, None] * tl.exp(s - lse_r[:, None]), 0.0)
        g_ki = tl.where(valid, w_c[None, :] * tl.exp(s - lse_c[None, :]), 0.0)
        ds += tl.sum(g_ik * uu, axis=1)
        zc = _load_rows(Z, cols, dv, N, D, UPCAST)
        mt = ((g_ik + g_ki) * inv_c[None, :]).to(zc.dtype)
        du = tl.dot(mt, zc, du, input_precision=PRECISION, out_dtype=ACC)

    view = rows % J
    first = rows - view
    pos_r = tl.load(POS + rows, mask=row_ok, other=0.0)
    for p in tl.static_range(1, J):
        partner = first + (view + p) % J
        inv_p = tl.load(INV + partner, mask=row_ok, other=0.0)
        uu = _row_dot(Z, rows, partner, N, D, ACC, BLOCK_M, BLOCK_D) * inv_r * inv_p
        if POSITIVES_LSE:
            w_ip = tl.exp(uu * scale - pos_r)
            w_pi = tl.exp(uu * scale - tl.load(POS + partner, mask=row_ok, other=0.0))
        else:
            w_ip = 1.0 / (J - 1)
            w_pi = 1.0 / (J - 1)
        w_p = tl.load(W + partner, mask=row_ok, other=0.0)
        ds -= w_r * w_ip * uu
        coeff = (w_r * w_ip + w_p * w_pi) * inv_p
        du -= coeff[:, None] * _load_rows(Z, partner, dv, N, D, False).to(ACC)

    tl.store(DU + rows[:, None] * D + dv[None, :], du * scale, mask=row_ok[:, None] & (dv < D)[None, :])
    if tl.program_id(1) == 0:
        tl.store(DSCALE + rows, ds, mask=row_ok)


@triton.jit
def _finish_backward_kernel(Z, INV, DU, DZ, N, D, NORMALIZE: tl.constexpr, EPS: tl.constexpr,
                            BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    ACC: tl.constexpr = INV.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < N
    c = tl.load(INV + rows, mask=row_ok, other=0.0)
    if NORMALIZE:
        z_du = tl.zeros([BLOCK_ROWS], dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            dims = d0 + tl.arange(0, BLOCK_D)
            z_du += tl.sum(_load_rows(Z, rows, dims, N, D, False).to(ACC) * _load_rows(DU, rows, dims, N, D, False),
                           axis=1)
        proj = tl.where(c < 1.0 / EPS, c * c * z_du, 0.0)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        dz = _load_rows(DU, rows, dims, N, D, False)
        if NORMALIZE:
            dz = (dz - proj[:, None] * _load_rows(Z, rows, dims, N, D, False).to(ACC)) * c[:, None]
        mask = row_ok[:, None] & (dims < D)[None, :]
        tl.store(DZ + rows[:, None] * D + dims[None, :], dz.to(DZ.dtype.element_ty), mask=mask)


def _settings(z):
    upcast = interpreting() and z.dtype in (torch.float16, torch.bfloat16)
    return dict(UPCAST=upcast, PRECISION="ieee")


def _inverse_norms(zr, acc, normalize):
    n, d = zr.shape
    inv = torch.empty(n, dtype=acc, device=zr.device)
    _inverse_norm_kernel[(triton.cdiv(n, BLOCK_ROWS),)](
        zr, inv, n, d, NORMALIZE=normalize, EPS=NORM_EPS, BLOCK_ROWS=BLOCK_ROWS, BLOCK_D=BLOCK_D
    )
    return inv


def forward(z, temperature, normalize, positives_logsumexp):
    """(loss, lse, pos), each [N] in temperature's (the accumulation) dtype."""
    G, J, D = z.shape
    zr = z.reshape(G * J, D).contiguous()
    n, acc = G * J, temperature.dtype
    inv = _inverse_norms(zr, acc, normalize)
    loss, lse, pos = (torch.empty(n, dtype=acc, device=z.device) for _ in range(3))
    _forward_kernel[(triton.cdiv(n, BLOCK_M),)](
        zr, inv, temperature, loss, lse, pos, n, D, J=J, POSITIVES_LSE=positives_logsumexp,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, **_settings(z),
    )
    return loss, lse, pos


def backward(grad_loss, z, temperature, lse, pos, normalize, positives_logsumexp):
    """(dL/dz like z, dL/dtau like temperature)."""
    G, J, D = z.shape
    zr = z.reshape(G * J, D).contiguous()
    n, acc = G * J, temperature.dtype
    w = grad_loss.to(acc).contiguous()
    inv = _inverse_norms(zr, acc, normalize)
    du = torch.empty(n, D, dtype=acc, device=z.device)
    dscale = torch.empty(n, dtype=acc, device=z.device)
    block_dv = min(128, max(16, triton.next_power_of_2(D)))
    _backward_kernel[(triton.cdiv(n, BLOCK_M), triton.cdiv(D, block_dv))](
        zr, inv, temperature, w, lse.contiguous(), pos.contiguous(), du, dscale, n, D, J=J,
        POSITIVES_LSE=positives_logsumexp, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
        BLOCK_DV=block_dv, **_settings(z),
    )
    dz = torch.empty_like(zr)
    _finish_backward_kernel[(triton.cdiv(n, BLOCK_ROWS),)](
        zr, inv, du, dz, n, D, NORMALIZE=normalize, EPS=NORM_EPS, BLOCK_ROWS=BLOCK_ROWS, BLOCK_D=BLOCK_D
    )
    return dz.view(G, J, D), -dscale.sum() / (temperature * temperature)
