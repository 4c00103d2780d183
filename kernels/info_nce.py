"""Launchers of the Triton InfoNCE / NT-Xent kernels over groups of views (docs/math.md §4): no N x N tensor,
every pair of row blocks visited once (the logits are symmetric, s_ik = s_ki): the symmetric tiles of docs/math.md
§4.1, variant "two maxima" with "partials and atomics".

Notation. z: [G, J, D] as N = G*J rows z_i; c_i = 1/max(||z_i||, 1e-12) with normalize (F.normalize), else 1;
scale = 1/tau (read from the temperature tensor on the device: no host sync); s_ik = (z_i . z_k) (c_i scale) c_k.
Products run on z itself (fp16/bf16 on the tensor cores; fp32 as TF32 or exact "ieee" following torch's switch,
kernels/launch.py; fp64 exact) with fp32 accumulation (fp64 for fp64 z); norms enter as row/column factors.
Rows are cut into T = cdiv(N, B) blocks; tile (I, K) is S[I, K] = s over rows of I x rows of K. A program
takes a chunk of L consecutive tiles of one row block, so the grid has ~T^2/(2L) programs, not T.

Forward (kernels/info_nce_forward.py), tiles (I, K) with K >= I only:
    inverse_norm_kernel: c_i.
    forward_tiles_kernel: one product S[I, K] updates the running (max m, sum-exp l) of the rows of I (row-wise)
      and gives the rows of K their partial (max, sum-exp) over I (column-wise): l <- l e^{m - m'} + sum e^{s - m'}.
      Partials go to PART [T + C, N] (C = cdiv(T, L)): a row of block K gets one column partial per I < K and
      one row partial per chunk of its own, each written by exactly one program.
    forward_finish_kernel: lse_i = merge of its partials in a fixed order (deterministic, no atomics); the
      positives O(J D) per row: pos_i = mean_p s_ip or LSE_p s_ip; loss_i = lse_i - pos_i.
Backward (kernels/info_nce_backward.py), w_i = dloss/dloss_i, P_ik = exp(s_ik - lse_i), G_ik = w_i (P_ik - W_ik):
    dL/du_i = scale sum_k (G_ik + G_ki) u_k,  dL/dscale = sum_ik G_ik (u_i . u_k),  dL/dtau = -dL/dscale / tau^2.
    backward_tiles_kernel recomputes S[I, K] (bit for bit the forward's: same tile shape, D loop and factor
    order, kernels/info_nce_tiles.py) and forms M = G_IK + G_KI^T (their exp part) from it:
      du_I += M (c_K Z_K) in registers,  du_K += M^T (c_I Z_I) by fp32 atomics (as FlashAttention-2/3 accumulate
      dQ); with torch.use_deterministic_algorithms(True), block I instead owns its rows and visits every K.
    backward_finish_kernel adds the positives' part (-w_i W_ip - w_p W_pi on the J-1 partners, O(J D)), scales
    by 1/tau, and applies the F.normalize Jacobian dz_i = c_i (du_i - c_i^2 (z_i . du_i) z_i).
fp16 operand: the entries of M c are ~ w P c ~ c/N^2 (mean reduction) and underflow fp16 (2^-24) at N ~ 2^12;
    they are multiplied by sigma = 2^k before the cast, with 2 max|w| max c sigma in [2^14, 2^15) (no overflow),
    and du is divided by sigma after (info_nce_tiles.fp16_operand_scale). Cost: one FMUL folded into the column
    factor, one [2, cdiv(N, 32)] read per program. bf16 has fp32's exponent range and needs none.

FLOPs and exps (N rows, D dims; off-diagonal tiles dominate, the T diagonal tiles add O(N B D)):
    forward  N^2/2 pairs x (2D multiply-add FLOPs for s, one product for both sides) = N^2 D;
             2 exps per pair (row side and column side each need their own running max) = N^2.
    backward N^2/2 pairs x (2D for s + 2D for M U_K + 2D for M^T U_I) = 3 N^2 D; 2 exps per pair = N^2.
    total 4 N^2 D FLOPs and 2 N^2 exps (streaming every column per row block: 6 N^2 D and 3 N^2).
    Deterministic backward: every off-diagonal tile is computed by both owners: 4 N^2 D and 2 N^2.
    Why 2, not 1.5 N^2 exps: one exp per pair in the forward would need one shift per element for both sides;
    a tile-wide shift underflows a row whose logits all lie > 87 below the tile's max (tau < 0.023 with
    normalize, or any unnormalised input), so both sides keep their own max. H200 arithmetic at D = 128, bf16, per
    SM and clock: 4096 tensor-core FLOPs, 16 MUFU exps, 128 FP32 ops. Per unordered pair, forward: the product
    256 FLOPs = 0.0625 clk, 2 exps = 0.125 clk; streaming (two ordered products, two exps) 0.125 / 0.125: the
    symmetric forward halves the tensor-core work but stays exp-bound at the same 0.125 clk per pair for
    D <= 128 (it pays in fp32/TF32 and at D >= 256); the backward halves both (0.1875 / 0.125 vs 0.375 / 0.25).
Extra memory: c, lse, pos, w ([N] each), PART 8 (T + C) N bytes (N^2/B x 8 B (1 + 1/L), ~1/51 of one N x N fp32
at B = 64, L = 8), du [N, D] fp32 (deterministic: [C, N, D]), DS one float per program and per row.
Empty inputs launch nothing: G = 0 gives [0] results (a mean over them is NaN, as in torch); D = 0 gives
s = 0 everywhere: lse = log(N - 1), pos = 0 or log(J - 1), dz empty, dtau = 0.
"""
import math

import torch
import triton

from simvae_fast.backends import interpreting
from simvae_fast.kernels.info_nce_backward import backward_finish_kernel, backward_tiles_kernel
from simvae_fast.kernels.info_nce_forward import forward_finish_kernel, forward_tiles_kernel, inverse_norm_kernel
from simvae_fast.kernels.launch import device_guard, fp32_dot_precision

NORM_EPS = 1e-12
BLOCK_ROWS = 32  # rows per program of inverse_norm_kernel
MAX_ONE_CHUNK = 128  # D up to this is held whole per tile (no D loop, no tile recomputed per output chunk);
# at 256 the backward's two [64, 256] fp32 accumulators spill even at 8 warps
INTERPRET_BIG_N = 2048
FINISH_TILE = 2048  # elements per program of backward_finish_kernel


def _config(n, D, dtype, precision, symmetric=True):
    """Tile sizes for rows of D (a multiple of 16, _rows), dtype and fp32 precision. B: rows per block (the tile
    is B x B); L: tiles per program; ONE_CHUNK (D a power of two <= MAX_ONE_CHUNK): whole rows per tile,
    BLOCK_D = BLOCK_DV = D; else the product loops over D in BLOCK_D chunks (a power of two dividing D: no
    padding work) and each backward program owns BLOCK_DV output dims (the tile is recomputed per chunk).
    Chosen as the largest tiles and fewest warps with no spill on sm_90 (Triton 3.9, cuobjdump; the table is in
    benchmarks/results/triton_kernels.md): half precision B = 64 (one wgmma warpgroup per 64 rows), 4 warps up to
    D = 128 in the forward and D = 32 in the backward, else 8; fp32 B = 32 (the TF32 backward at B = 64 spills
    200 B at D = 128), 8 warps, and exact fp32 (FFMA: both operands in registers) in 16-wide D chunks, 4
    backward warps up to D = 64. The backward runs 2 pipeline stages (3 spilled the deterministic schedule).
    Two backward cases spill at those sizes (benchmarks/kernel_check.py, which compiles the deterministic schedule
    and TF32 too): the deterministic (symmetric=False) half-precision backward with whole rows (D <= 128: 255
    registers, 8-64 B of stack at B = 64) takes B = 32 with L = 16 (same rows per program, 90-120 registers), and
    the TF32 backward at D > 128 takes BLOCK_DV = 64 (BLOCK_DV = 128 at D = 256: 8 B of stack; 64: 172 registers,
    the tile recomputed per 64 output dims instead of 128).
    Interpreting: one config, L = 2 so that small test sizes cross chunk boundaries, and B = 256 above
    INTERPRET_BIG_N rows (the interpreter pays per program and per operation, not per element)."""
    exact32 = dtype == torch.float32 and precision == "ieee"
    one_chunk = D <= MAX_ONE_CHUNK and D & (D - 1) == 0 and not exact32
    block_d = D if one_chunk else min(16 if exact32 else 64, D & -D)
    tf32 = dtype == torch.float32 and not exact32
    block_dv = D if one_chunk else min(64 if tf32 else 128, triton.next_power_of_2(D))
    half = dtype in (torch.float16, torch.bfloat16)
    B = 64 if half or dtype == torch.float64 else 32
    if interpreting():
        B = 256 if n > INTERPRET_BIG_N else B
        return dict(B=B, L=2, BLOCK_D=block_d, BLOCK_DV=block_dv, ONE_CHUNK=one_chunk, warps_fwd=4, warps_bwd=4)
    L = 8
    if half and one_chunk and not symmetric:
        B, L = 32, 16
    warps_fwd = 4 if half and D <= 128 else 8
    warps_bwd = 4 if (half and D <= 32) or (exact32 and D <= 64) else 8
    return dict(B=B, L=L, BLOCK_D=block_d, BLOCK_DV=block_dv, ONE_CHUNK=one_chunk, warps_fwd=warps_fwd,
                warps_bwd=warps_bwd)


def _rows(z):
    """z as contiguous rows [N, D16], D rounded up to a multiple of 16 with zero columns (they change no product
    or norm): aligned rows load vectorised; at D = 10 or 129 every element had its own 64-bit address and the
    kernels spilled (up to 2 KB of stack)."""
    G, J, D = z.shape
    rows = z.reshape(G * J, D)
    pad = -D % 16
    return torch.nn.functional.pad(rows, (0, pad)) if pad else rows.contiguous()


def _dot_chunk(D):
    """D chunk of the O(N D) row products: the largest power of two <= 64 dividing D (a multiple of 16)."""
    return min(64, D & -D)


def _precision(dtype):
    return fp32_dot_precision() if dtype == torch.float32 else "ieee"


def _upcast(dtype):
    return interpreting() and dtype in (torch.float16, torch.bfloat16)


def _symmetric_backward():
    """Atomics accumulate in a timing-dependent order: the deterministic schedule when torch asks for one."""
    return not torch.are_deterministic_algorithms_enabled()


def _inverse_norms(zr, acc, normalize, w=None):
    """c [N], and with w (fp16 backward) the per-program maxima PMAX [2, programs] for the operand scale."""
    n, d = zr.shape
    programs = triton.cdiv(n, BLOCK_ROWS)
    inv = torch.empty(n, dtype=acc, device=zr.device)
    pmax = torch.empty(2, programs, dtype=torch.float32, device=zr.device) if w is not None else inv
    inverse_norm_kernel[(programs,)](zr, inv, inv if w is None else w, pmax, n, d, NORMALIZE=normalize,
                                     EPS=NORM_EPS, MAXES=w is not None, BLOCK_ROWS=BLOCK_ROWS, BLOCK_D=_dot_chunk(d))
    return inv, pmax, programs


def _dimensionless(n, J, acc, device, positives_logsumexp):
    """D = 0: every logit is 0."""
    lse = torch.full((n,), math.log(n - 1), dtype=acc, device=device)
    pos = torch.full((n,), math.log(J - 1) if positives_logsumexp else 0.0, dtype=acc, device=device)
    return lse - pos, lse, pos


def forward(z, temperature, normalize, positives_logsumexp):
    """(loss, lse, pos), each [N] in temperature's (the accumulation) dtype."""
    G, J, D = z.shape
    n, acc = G * J, temperature.dtype
    if n == 0:
        return tuple(torch.empty(0, dtype=acc, device=z.device) for _ in range(3))
    if D == 0:
        return _dimensionless(n, J, acc, z.device, positives_logsumexp)
    with device_guard(z):
        zr = _rows(z)
        D = zr.shape[1]
        cfg = _config(n, D, z.dtype, _precision(z.dtype))
        B, L = cfg["B"], cfg["L"]
        T = triton.cdiv(n, B)
        C = triton.cdiv(T, L)
        inv, _, _ = _inverse_norms(zr, acc, normalize)
        part_m = torch.empty(T + C, n, dtype=acc, device=z.device)
        part_l = torch.empty(T + C, n, dtype=acc, device=z.device)
        forward_tiles_kernel[(C, T)](
            zr, inv, temperature, part_m, part_l, n, D, T, L, UPCAST=_upcast(z.dtype), PRECISION=_precision(z.dtype),
            B=B, BLOCK_D=cfg["BLOCK_D"], ONE_CHUNK=cfg["ONE_CHUNK"], num_warps=cfg["warps_fwd"],
        )
        loss, lse, pos = (torch.empty(n, dtype=acc, device=z.device) for _ in range(3))
        forward_finish_kernel[(T,)](
            zr, inv, temperature, part_m, part_l, loss, lse, pos, n, D, T, C, J=J,
            POSITIVES_LSE=positives_logsumexp, B=B, BLOCK_D=_dot_chunk(D),
        )
    return loss, lse, pos


def backward(grad_loss, z, temperature, lse, pos, normalize, positives_logsumexp):
    """(dL/dz like z, dL/dtau like temperature)."""
    G, J, D = z.shape
    n, acc = G * J, temperature.dtype
    if n == 0 or D == 0:
        return torch.empty_like(z), torch.zeros_like(temperature)
    symmetric = _symmetric_backward()
    fp16 = z.dtype == torch.float16
    with device_guard(z):
        zr = _rows(z)
        D16 = zr.shape[1]
        cfg = _config(n, D16, z.dtype, _precision(z.dtype), symmetric)
        B, L = cfg["B"], cfg["L"]
        T = triton.cdiv(n, B)
        C = triton.cdiv(T, L)
        n_dv = triton.cdiv(D16, cfg["BLOCK_DV"])
        w = grad_loss.to(acc).contiguous()
        inv, pmax, n_pmax = _inverse_norms(zr, acc, normalize, w if fp16 else None)
        slices = 1 if symmetric else C
        du = (torch.zeros if symmetric else torch.empty)(slices, n, D16, dtype=acc, device=z.device)
        ds = torch.empty(C * T * n_dv + n, dtype=acc, device=z.device)
        backward_tiles_kernel[(C, T, n_dv)](
            zr, inv, temperature, w, lse.contiguous(), pmax, du, ds, n, D16, T, L, n_pmax, SYMMETRIC=symmetric,
            FP16_SCALE=fp16, UPCAST=_upcast(z.dtype), PRECISION=_precision(z.dtype), EPS=NORM_EPS, B=B,
            BLOCK_D=cfg["BLOCK_D"], BLOCK_DV=cfg["BLOCK_DV"], ONE_CHUNK=cfg["ONE_CHUNK"], num_warps=cfg["warps_bwd"], num_stages=2,
        )
        dz = torch.empty_like(zr)
        row_block = triton.next_power_of_2(D16)
        rows_per_program = max(1, min(64, FINISH_TILE // row_block))
        backward_finish_kernel[(triton.cdiv(n, rows_per_program),)](
            zr, inv, temperature, w, pos.contiguous(), pmax, du, dz, ds[C * T * n_dv:], n, D16, n_pmax, slices, J=J,
            POSITIVES_LSE=positives_logsumexp, NORMALIZE=normalize, FP16_SCALE=fp16, EPS=NORM_EPS,
            BLOCK_ROWS=rows_per_program, BLOCK_D=row_block, BLOCK_DOT=_dot_chunk(D16),
        )
        grad_temperature = -ds.sum() / temperature
    return dz[:, :D].contiguous().view(G, J, D), grad_temperature
