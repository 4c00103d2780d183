"""Triton helpers shared by the InfoNCE forward and backward kernels (kernels/info_nce.py has the math).

Both directions must compute every logit bit for bit alike (the backward's exp(s - lse) is only as exact as
its s agrees with the s the forward put into lse), so the tile product, the logit scaling and the positives'
row products live here, once: same tile shape, same D loop, same order of multiplications.
"""
import triton
import triton.language as tl


@triton.jit
def load_rows(Z, rows, dims, N, D, UPCAST: tl.constexpr):
    """Z[rows, dims] (zero outside [N, D]); fp32 right after the load under UPCAST (the interpreter's half
    precision arithmetic is wrong; fp16/bf16 values are exact in fp32)."""
    x = tl.load(Z + rows[:, None] * D + dims[None, :], mask=(rows < N)[:, None] & (dims < D)[None, :], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def dot_operand(x, ZT: tl.constexpr, EMULATE: tl.constexpr):
    """x cast to z's dtype ZT for tl.dot, exactly as the compiled kernel rounds it (round to nearest even,
    fp16 subnormals and underflow included). EMULATE (interpreter with UPCAST): the rounding is applied and
    the value kept in fp32, so the interpreter sees the GPU's operand. The interpreter's own fp32 -> bf16
    cast truncates, hence the bit arithmetic for bf16; its fp32 -> fp16 cast rounds correctly (numpy)."""
    if ZT == tl.float32 or ZT == tl.float64:
        return x
    elif EMULATE:
        if ZT == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            return bits.to(tl.float32, bitcast=True)
        else:
            return x.to(ZT).to(tl.float32)
    else:
        return x.to(ZT)


@triton.jit
def logit_tile(Z, z_r, z_c, rows, cols, row_factor, col_factor, N, D, ACC: tl.constexpr,
               UPCAST: tl.constexpr, PRECISION: tl.constexpr, B: tl.constexpr, BLOCK_D: tl.constexpr,
               ONE_CHUNK: tl.constexpr):
    """s[r, c] = (z_r . z_c) * row_factor[r] * col_factor[c], [B, B] in the accumulation dtype.
    ONE_CHUNK (D <= BLOCK_D): z_r, z_c are the loaded [B, BLOCK_D] tiles; else Z is streamed in BLOCK_D chunks."""
    if ONE_CHUNK:
        acc = tl.dot(z_r, tl.trans(z_c), input_precision=PRECISION, out_dtype=ACC)
    else:
        acc = tl.zeros([B, B], dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            dims = d0 + tl.arange(0, BLOCK_D)
            a = load_rows(Z, rows, dims, N, D, UPCAST)
            b = load_rows(Z, cols, dims, N, D, UPCAST)
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION, out_dtype=ACC)
    return acc * row_factor[:, None] * col_factor[None, :]


@triton.jit
def row_dot(Z, rows, partners, N, D, ACC: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """z_rows . z_partners row by row, in the accumulation dtype (the positives' logits)."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        a = load_rows(Z, rows, dims, N, D, False).to(ACC)
        b = load_rows(Z, partners, dims, N, D, False).to(ACC)
        acc += tl.sum(a * b, axis=1)
    return acc


@triton.jit
def online_merge(m, l, m_part, l_part):
    """(m, l) of a running log-sum-exp merged with a partial (m_part, l_part): the new max, the rescaled sum.
    An empty side has m = -inf, l = 0; the shift falls back to 0 when both are empty (no -inf - -inf)."""
    m_new = tl.maximum(m, m_part)
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    return m_new, l * tl.exp(m - shift) + l_part * tl.exp(m_part - shift)


@triton.jit
def fp16_operand_scale(PMAX, N_PMAX, BLOCK: tl.constexpr):
    """sigma = 2^k with 2 max|w| max c * sigma in [2^14, 2^15): every fp16 operand (w_i P_ik + w_k P_ki) c *
    sigma <= 2 max|w| max c sigma < 2^15 (no overflow), and the typical entry ~ c/N^2 lands near 2^14/N instead
    of underflowing. PMAX: [2, N_PMAX] per-program maxima of |w| and of the operand factor c. Exact: built from
    exponent bits, no exp2/log2 rounding."""
    mw = tl.full([], 0.0, tl.float32)
    mc = tl.full([], 0.0, tl.float32)
    for p0 in range(0, N_PMAX, BLOCK):
        idx = p0 + tl.arange(0, BLOCK)
        ok = idx < N_PMAX
        mw = tl.maximum(mw, tl.max(tl.load(PMAX + idx, mask=ok, other=0.0).to(tl.float32), axis=0))
        mc = tl.maximum(mc, tl.max(tl.load(PMAX + N_PMAX + idx, mask=ok, other=0.0).to(tl.float32), axis=0))
    x = 2.0 * mw * mc
    exponent = ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    k = tl.minimum(tl.maximum(14 - exponent, -126), 127)
    return ((k + 127) << 23).to(tl.float32, bitcast=True)
