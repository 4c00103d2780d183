"""Triton kernels of the InfoNCE backward: the tile pass (symmetric with atomics, or deterministic) and the
per-row finish (kernels/info_nce.py derives the math, the schedule and the FLOP/exp counts)."""
import triton
import triton.language as tl

from simvae_fast.kernels.info_nce_tiles import dot_operand, fp16_operand_scale, load_rows, logit_tile, row_dot


@triton.jit
def _pair_tile(Z, z_r, z_c, rows_r, rows_c, inv_r, inv_c, lse_r, lse_c, w_r, w_c, off_diagonal, scale, N, D,
               ACC: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, B: tl.constexpr,
               BLOCK_D: tl.constexpr, ONE_CHUNK: tl.constexpr):
    """(s, M) on the tile (rows r, columns c) in the forward's orientation (r the lower block), so s is the
    forward's logit bit for bit. M[r, c] = G_rc + G_cr with G_rc = w_r exp(s - lse_r), G_cr = w_c exp(s - lse_c)
    (one s serves both orders: 2 exps per element); on the diagonal tile G_rc alone, since the square holds
    both orders as separate elements."""
    s = logit_tile(Z, z_r, z_c, rows_r, rows_c, inv_r * scale, inv_c, N, D, ACC, UPCAST, PRECISION, B, BLOCK_D,
                   ONE_CHUNK)
    valid = (rows_r < N)[:, None] & (rows_c < N)[None, :] & (rows_r[:, None] != rows_c[None, :])
    g = w_r[:, None] * tl.exp(s - lse_r[:, None])
    g += tl.where(off_diagonal, w_c[None, :] * tl.exp(s - lse_c[None, :]), 0.0)
    return s, tl.where(valid, g, 0.0)


@triton.jit
def backward_tiles_kernel(Z, INV, TEMP, W, LSE, PMAX, DU, DS, N, D, T, L, N_PMAX, SYMMETRIC: tl.constexpr,
                          FP16_SCALE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                          EPS: tl.constexpr, B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                          ONE_CHUNK: tl.constexpr):
    """Program (chunk c, row block I, output dims chunk); du is accumulated sigma-scaled, without the 1/tau.
    SYMMETRIC: tiles (I, K), K in [I + cL, I + cL + L) ∩ [0, T): du_I += M (sigma c_K) Z_K in registers,
    du_K += M^T (sigma c_I) Z_I by fp32 atomics into DU [N, D] (zeroed); the diagonal tile adds both to du_I.
    Per off-diagonal tile 6 B^2 D FLOPs and 2 B^2 exps.
    Deterministic (not SYMMETRIC): block I owns its rows and visits every K in [cL, cL + L) ∩ [0, T), each tile
    in the forward's orientation, keeping only its own side: plain stores into DU[c] (no atomics), summed in
    a fixed order by backward_finish_kernel (off-diagonal tiles are computed by both owners: 8 B^2 D, 4 B^2).
    DS[program] = the sum of M * s over the ordered pairs this program counts (dL/dscale = tau * sum DS)."""
    ACC: tl.constexpr = INV.dtype.element_ty
    ZT: tl.constexpr = Z.dtype.element_ty
    c = tl.program_id(0)
    bi = tl.program_id(1)
    ar = tl.arange(0, B)
    dv = tl.program_id(2) * BLOCK_DV + tl.arange(0, BLOCK_DV)
    scale = 1.0 / tl.load(TEMP)
    rows_i = bi.to(tl.int64) * B + ar
    ok_i = rows_i < N
    inv_i = tl.load(INV + rows_i, mask=ok_i, other=0.0)
    lse_i = tl.load(LSE + rows_i, mask=ok_i, other=0.0)
    w_i = tl.load(W + rows_i, mask=ok_i, other=0.0)
    z_i = load_rows(Z, rows_i, dv, N, D, UPCAST)
    fac_i = inv_i
    if FP16_SCALE:  # zero rows (exactly 0 in fp16) get factor 0: no inf * 0 in the operand
        sigma = fp16_operand_scale(PMAX, N_PMAX, 1024)
        fac_i = tl.where(inv_i * EPS < 0.5, inv_i, 0.0) * sigma
    du = tl.zeros([B, BLOCK_DV], dtype=ACC)
    ds = tl.zeros([B], dtype=ACC)
    if SYMMETRIC:
        k_first = bi + c * L
    else:
        k_first = c * L
    for bk in range(k_first, tl.minimum(k_first + L, T)):
        off_diagonal = bk != bi
        rows_k = (bk * B + ar).to(tl.int64)
        ok_k = rows_k < N
        inv_k = tl.load(INV + rows_k, mask=ok_k, other=0.0)
        lse_k = tl.load(LSE + rows_k, mask=ok_k, other=0.0)
        w_k = tl.load(W + rows_k, mask=ok_k, other=0.0)
        z_k = load_rows(Z, rows_k, dv, N, D, UPCAST)
        fac_k = inv_k
        if FP16_SCALE:
            fac_k = tl.where(inv_k * EPS < 0.5, inv_k, 0.0) * sigma
        if SYMMETRIC:
            s, mat = _pair_tile(Z, z_i, z_k, rows_i, rows_k, inv_i, inv_k, lse_i, lse_k, w_i, w_k, off_diagonal,
                                scale, N, D, ACC, UPCAST, PRECISION, B, BLOCK_D, ONE_CHUNK)
            du = tl.dot(dot_operand(mat * fac_k[None, :], ZT, UPCAST), z_k, du, input_precision=PRECISION,
                        out_dtype=ACC)
            col = tl.dot(tl.trans(dot_operand(mat * fac_i[:, None], ZT, UPCAST)), z_i, input_precision=PRECISION,
                         out_dtype=ACC)
            tl.atomic_add(DU + rows_k[:, None] * D + dv[None, :], col,
                          mask=(rows_k < tl.where(off_diagonal, N, 0))[:, None] & (dv < D)[None, :], sem="relaxed")
            du += tl.where(off_diagonal, 0.0, col)
            ds += tl.sum(mat * s, axis=1)
        else:  # the tile in the forward's orientation: rows r = the lower of blocks I and K
            lower = bk < bi
            rows_r = tl.where(lower, rows_k, rows_i)
            rows_c = tl.where(lower, rows_i, rows_k)
            z_r = load_rows(Z, rows_r, dv, N, D, UPCAST)
            z_c = load_rows(Z, rows_c, dv, N, D, UPCAST)
            s, mat = _pair_tile(Z, z_r, z_c, rows_r, rows_c, tl.where(lower, inv_k, inv_i),
                                tl.where(lower, inv_i, inv_k), tl.where(lower, lse_k, lse_i),
                                tl.where(lower, lse_i, lse_k), tl.where(lower, w_k, w_i), tl.where(lower, w_i, w_k),
                                off_diagonal, scale, N, D, ACC, UPCAST, PRECISION, B, BLOCK_D, ONE_CHUNK)
            ds += tl.sum(mat * s, axis=1) * tl.where(off_diagonal, 0.5, 1.0)
            if bk >= bi:  # block I holds the tile's rows
                du = tl.dot(dot_operand(mat * fac_k[None, :], ZT, UPCAST), z_c, du, input_precision=PRECISION,
                            out_dtype=ACC)
            if bk <= bi:  # block I holds the tile's columns (both, on the diagonal)
                du = tl.dot(tl.trans(dot_operand(mat * fac_k[:, None], ZT, UPCAST)), z_r, du,
                            input_precision=PRECISION, out_dtype=ACC)
    if SYMMETRIC:  # (rows < 0 where the scalar condition fails: a scalar & tensor mask breaks the interpreter)
        tl.atomic_add(DU + rows_i[:, None] * D + dv[None, :], du,
                      mask=(rows_i < tl.where(k_first < T, N, 0))[:, None] & (dv < D)[None, :], sem="relaxed")
    else:
        tl.store(DU + (c * N + rows_i[:, None]) * D + dv[None, :], du, mask=ok_i[:, None] & (dv < D)[None, :])
    program = (tl.program_id(2) * tl.num_programs(1) + bi) * tl.num_programs(0) + c
    tl.store(DS + program, tl.where(tl.program_id(2) == 0, tl.sum(ds, axis=0), 0.0))


@triton.jit
def backward_finish_kernel(Z, INV, TEMP, W, POS, PMAX, DU, DZ, DS, N, D, N_PMAX, SLICES, J: tl.constexpr,
                           POSITIVES_LSE: tl.constexpr, NORMALIZE: tl.constexpr, FP16_SCALE: tl.constexpr,
                           EPS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                           BLOCK_DOT: tl.constexpr):
    """Per row, whole rows (BLOCK_D >= D): du_i = sum of the DU slices / sigma - sum_p (w_i W_ip + w_p W_pi) c_p z_p
    (the positives' part of G + G^T, O(J D)), times 1/tau; then dz_i = c_i (du_i - c_i^2 (z_i . du_i) z_i) for
    ||z_i|| > EPS (the F.normalize Jacobian), c_i du_i otherwise. DS[row] = -sum_p w_i W_ip s_ip."""
    ACC: tl.constexpr = INV.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    mask = row_ok[:, None] & (dims < D)[None, :]
    du = tl.zeros([BLOCK_ROWS, BLOCK_D], dtype=ACC)
    for part in range(0, SLICES):
        du += tl.load(DU + (part * N + rows[:, None]) * D + dims[None, :], mask=mask, other=0.0)
    if FP16_SCALE:
        du = du / fp16_operand_scale(PMAX, N_PMAX, 1024)
    scale = 1.0 / tl.load(TEMP)
    c = tl.load(INV + rows, mask=row_ok, other=0.0)
    a = c * scale
    w_r = tl.load(W + rows, mask=row_ok, other=0.0)
    pos_r = tl.load(POS + rows, mask=row_ok, other=0.0)
    view = rows % J
    first = rows - view
    ds = tl.zeros([BLOCK_ROWS], dtype=ACC)
    for p in tl.static_range(1, J):
        partner = first + (view + p) % J
        inv_p = tl.load(INV + partner, mask=row_ok, other=0.0)
        s = row_dot(Z, rows, partner, N, D, ACC, BLOCK_ROWS, BLOCK_DOT) * a * inv_p  # as in the forward
        if POSITIVES_LSE:
            w_ip = tl.exp(s - pos_r)
            w_pi = tl.exp(s - tl.load(POS + partner, mask=row_ok, other=0.0))
        else:
            w_ip = 1.0 / (J - 1)
            w_pi = 1.0 / (J - 1)
        w_p = tl.load(W + partner, mask=row_ok, other=0.0)
        ds -= w_r * w_ip * s
        coeff = (w_r * w_ip + w_p * w_pi) * inv_p
        du -= coeff[:, None] * load_rows(Z, partner, dims, N, D, False).to(ACC)
    du = du * scale
    if NORMALIZE:
        z = load_rows(Z, rows, dims, N, D, False).to(ACC)
        proj = tl.where(c < 1.0 / EPS, c * c * tl.sum(z * du, axis=1), 0.0)
        du = (du - proj[:, None] * z) * c[:, None]
    tl.store(DZ + rows[:, None] * D + dims[None, :], du.to(DZ.dtype.element_ty), mask=mask)
    tl.store(DS + rows, ds, mask=row_ok)
