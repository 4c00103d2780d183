"""Triton kernels of the InfoNCE forward: inverse norms, the symmetric tile pass, the merge (kernels/info_nce.py
derives the math, the schedule and the FLOP/exp counts)."""
import triton
import triton.language as tl

from simvae_fast.kernels.info_nce_tiles import load_rows, logit_tile, online_merge, row_dot


@triton.jit
def inverse_norm_kernel(Z, INV, W, PMAX, N, D, NORMALIZE: tl.constexpr, EPS: tl.constexpr, MAXES: tl.constexpr,
                        BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """c_i = 1/max(||z_i||, EPS) (1 without normalize): 2 D FLOPs per row. MAXES (fp16 backward): also this
    program's max |w_i| and max of the fp16 operand factor (c_i, or 0 for a zero row: its z is exactly 0 in
    fp16, so it contributes nothing and must not set the scale) into PMAX[0 | 1, program]."""
    ACC: tl.constexpr = INV.dtype.element_ty
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < N
    if NORMALIZE:
        inv = 1.0 / tl.maximum(tl.sqrt(row_dot(Z, rows, rows, N, D, ACC, BLOCK_ROWS, BLOCK_D)), EPS)
    else:
        inv = tl.full([BLOCK_ROWS], 1.0, dtype=ACC)
    tl.store(INV + rows, inv.to(ACC), mask=row_ok)
    if MAXES:
        w = tl.abs(tl.load(W + rows, mask=row_ok, other=0.0))
        factor = tl.where(row_ok & (inv * EPS < 0.5), inv, 0.0)
        tl.store(PMAX + pid, tl.max(w, axis=0).to(tl.float32))
        tl.store(PMAX + tl.num_programs(0) + pid, tl.max(factor, axis=0).to(tl.float32))


@triton.jit
def forward_tiles_kernel(Z, INV, TEMP, PART_M, PART_L, N, D, T, L, UPCAST: tl.constexpr,
                         PRECISION: tl.constexpr, B: tl.constexpr, BLOCK_D: tl.constexpr, ONE_CHUNK: tl.constexpr):
    """Program (chunk c, row block I): tiles S[I, K] for K in [I + cL, I + cL + L) ∩ [0, T).
    Rows of I: a running (max, sum-exp) over the chunk -> PART[T + c, rows I].
    Rows of K > I: the tile's column (max, sum-exp) -> PART[I, rows K]. Per off-diagonal tile:
    2 B^2 D FLOPs (one product serves both sides) and 2 B^2 exps; diagonal tile: the full square, row side only."""
    ACC: tl.constexpr = INV.dtype.element_ty
    c = tl.program_id(0)
    bi = tl.program_id(1)
    ar = tl.arange(0, B)
    rows = bi.to(tl.int64) * B + ar
    row_ok = rows < N
    scale = 1.0 / tl.load(TEMP)
    row_factor = tl.load(INV + rows, mask=row_ok, other=0.0) * scale
    z_r = load_rows(Z, rows, tl.arange(0, BLOCK_D), N, D, UPCAST)
    m = tl.full([B], float("-inf"), dtype=ACC)
    l = tl.zeros([B], dtype=ACC)
    k_first = bi + c * L
    for bk in range(k_first, tl.minimum(k_first + L, T)):
        cols = (bk * B + ar).to(tl.int64)
        col_ok = cols < N
        col_factor = tl.load(INV + cols, mask=col_ok, other=0.0)
        z_c = load_rows(Z, cols, tl.arange(0, BLOCK_D), N, D, UPCAST)
        s = logit_tile(Z, z_r, z_c, rows, cols, row_factor, col_factor, N, D, ACC, UPCAST, PRECISION, B, BLOCK_D,
                       ONE_CHUNK)
        s = tl.where(row_ok[:, None] & col_ok[None, :] & (rows[:, None] != cols[None, :]), s, float("-inf"))
        m_tile = tl.max(s, axis=1)
        shift = tl.where(m_tile == float("-inf"), 0.0, m_tile)
        m, l = online_merge(m, l, m_tile, tl.sum(tl.exp(s - shift[:, None]), axis=1))
        if bk != bi:
            m_col = tl.max(s, axis=0)
            shift_col = tl.where(m_col == float("-inf"), 0.0, m_col)
            l_col = tl.sum(tl.exp(s - shift_col[None, :]), axis=0)
            tl.store(PART_M + bi * N + cols, m_col, mask=col_ok)
            tl.store(PART_L + bi * N + cols, l_col, mask=col_ok)
    tl.store(PART_M + (T + c) * N + rows, m, mask=row_ok)
    tl.store(PART_L + (T + c) * N + rows, l, mask=row_ok)


@triton.jit
def forward_finish_kernel(Z, INV, TEMP, PART_M, PART_L, LOSS, LSE, POS, N, D, T, C_MAX, J: tl.constexpr,
                          POSITIVES_LSE: tl.constexpr, B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program = row block I: lse_i merged in a fixed order from PART[0..I-1] (column partials of the tiles
    (K, I), K < I) and PART[T..T+C_MAX-1] (its own row chunks; empty ones are (-inf, 0)): deterministic.
    Then the positives, O(J D) per row: pos_i = mean_p s_ip or LSE_p s_ip, loss_i = lse_i - pos_i."""
    ACC: tl.constexpr = INV.dtype.element_ty
    bi = tl.program_id(0)
    rows = bi.to(tl.int64) * B + tl.arange(0, B)
    row_ok = rows < N
    m = tl.full([B], float("-inf"), dtype=ACC)
    l = tl.zeros([B], dtype=ACC)
    for slot in range(0, bi):
        m_part = tl.load(PART_M + slot * N + rows, mask=row_ok, other=float("-inf"))
        m, l = online_merge(m, l, m_part, tl.load(PART_L + slot * N + rows, mask=row_ok, other=0.0))
    for slot in range(T, T + C_MAX):
        m_part = tl.load(PART_M + slot * N + rows, mask=row_ok, other=float("-inf"))
        m, l = online_merge(m, l, m_part, tl.load(PART_L + slot * N + rows, mask=row_ok, other=0.0))
    lse = m + tl.log(tl.where(row_ok, l, 1.0))

    scale = 1.0 / tl.load(TEMP)
    a = tl.load(INV + rows, mask=row_ok, other=0.0) * scale
    view = rows % J
    first = rows - view
    total = tl.zeros([B], dtype=ACC)
    pm = tl.full([B], float("-inf"), dtype=ACC)
    pl = tl.zeros([B], dtype=ACC)
    for p in tl.static_range(1, J):
        partner = first + (view + p) % J
        inv_p = tl.load(INV + partner, mask=row_ok, other=0.0)
        s = row_dot(Z, rows, partner, N, D, ACC, B, BLOCK_D) * a * inv_p
        total += s
        pm, pl = online_merge(pm, pl, s, tl.full([B], 1.0, dtype=ACC))
    if POSITIVES_LSE:
        pos = pm + tl.log(pl) + (total - total)  # + 0, or NaN when a positive logit is NaN
    else:
        pos = total / (J - 1)
    tl.store(LSE + rows, lse, mask=row_ok)
    tl.store(POS + rows, pos, mask=row_ok)
    tl.store(LOSS + rows, lse - pos, mask=row_ok)
