"""The CUDA InfoNCE tile code on the CPU: csrc/cuda/info_nce_{tiles,rows}.cuh run under the host execution
policy (csrc/cuda/exec_policy_host.h) by tests/cuda_host/info_nce_host.cpp, built here with g++ (no torch
headers, no CUDA), against simvae_fast.reference in float64.

What runs is the kernels' own code: every block of every launch of one forward and one backward call, with the
launchers' schedule (symmetric sweep, or the deterministic one), each warp's 32 lanes through the PTX fragment
layouts of ldmatrix and mma.m16n8k16, and the race recorder watching shared memory between barriers. What the
emulation cannot see (the tensor core's own rounding, ex2.approx, timing) is listed in that header.

float32 runs the TF32 tile kernels (what the CUDA launchers pick when torch allows TF32): z rounded to tf32 as
cvt.rna.tf32.f32 does, mma.m16n8k8 fragment layouts. Their tolerances are derived, not measured: tf32_bounds.

The mutation tests build altered copies of the sources: an off-by-one in a tile index must fail the comparison,
a deleted barrier must be reported by the race recorder, an unrounded tf32 operand by the host mma.
"""
import hashlib
import math
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simvae_fast import reference
from tolerances import assert_relative, normwise_error

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "cuda_host" / "info_nce_host.cpp"
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.h")) + sorted((ROOT / "csrc" / "cuda").glob("*.cuh"))
CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++ to build the host driver")

# Norm-wise relative tolerances. The forward is fp32 arithmetic on exact products (~1e-7 seen); dz carries the
# rounding of the tensor-core operand Q c (2^-9 bf16, 2^-12 fp16) and of dz itself (seen: bf16 1.6-2.1e-3,
# fp16 2-5e-4 at N = 66 and 600).
FORWARD_TOL = 1e-5
DZ_TOL = {torch.bfloat16: 5e-3, torch.float16: 2e-3, torch.float32: 1e-4}
DTAU_TOL = 1e-4
DTYPE_CODE = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}


def build(sources_dir, flags=("-O2",)):
    """g++ build of the driver against `sources_dir` (a csrc tree), cached by a hash of what it compiles."""
    files = [DRIVER] + sorted(Path(sources_dir, "cuda").glob("*.h")) + sorted(Path(sources_dir, "cuda").glob("*.cuh"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files) + " ".join(flags).encode()).hexdigest()[:16]
    binary = Path(tempfile.gettempdir()) / "simvae_fast_cuda_host" / digest / "info_nce_host"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        scratch = binary.with_suffix(".tmp")
        subprocess.run([CXX, "-std=c++17", *flags, f"-I{sources_dir}", "-o", str(scratch), str(DRIVER)], check=True)
        scratch.replace(binary)
    return binary


@pytest.fixture(scope="module")
def host_binary():
    return build(ROOT / "csrc")


def run_host(binary, z, w, tau, normalize, positives, deterministic, target_blocks, tmp_path):
    """Runs the driver: (lse, pos, loss, dz, dtau) as float64 tensors, or the CompletedProcess if it failed."""
    G, J, D = z.shape
    N = G * J
    header = struct.pack("<8qf", N, D, J, DTYPE_CODE[z.dtype], int(normalize), int(positives == "logsumexp"),
                         int(deterministic), target_blocks, tau)
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    bits = z.reshape(-1).view(torch.int16 if z.element_size() == 2 else torch.int32)
    src.write_bytes(header + bits.numpy().tobytes() + w.numpy().tobytes())
    done = subprocess.run([str(binary), str(src), str(dst)], capture_output=True, text=True)
    if done.returncode != 0:
        return done
    out = torch.from_numpy(np.fromfile(dst, dtype=np.float32).astype(np.float64))
    lse, pos, loss = out[:N], out[N:2 * N], out[2 * N:3 * N]
    return lse, pos, loss, out[3 * N:3 * N + N * D].reshape(G, J, D), out[-1]


def expected(z, w, tau, normalize, positives):
    """float64: lse and positive term (from the logits), loss, dz, dtau (simvae_fast.reference)."""
    G, J, D = z.shape
    z64 = z.double().requires_grad_()
    t64 = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    loss = reference.info_nce(z64, t64, normalize, positives, "none")
    dz, dtau = torch.autograd.grad(loss, (z64, t64), w.double())
    rows = z.double().reshape(G * J, D)
    u = F.normalize(rows, dim=1) if normalize else rows
    logits = u @ u.T / tau
    eye = torch.eye(G * J, dtype=torch.bool)
    group = torch.arange(G * J) // J
    partner = (group[:, None] == group[None, :]) & ~eye
    lse = logits.masked_fill(eye, -math.inf).logsumexp(1)
    if positives == "mean":
        pos = logits.masked_fill(~partner, 0.0).sum(1) / (J - 1)
    else:
        pos = logits.masked_fill(~partner, -math.inf).logsumexp(1)
    return lse, pos, loss.detach(), dz, dtau


def tf32_round(x, ties_away=True):
    """float32 -> tf32 on finite values: cvt.rna.tf32.f32 (to nearest, ties away from zero), or to nearest even."""
    bits = x.numpy().view(np.uint32).astype(np.uint64)
    half = 0x1000 if ties_away else 0x0FFF + ((bits >> 13) & 1)
    return torch.from_numpy(((bits + half) & 0xFFFFE000).astype(np.uint32).view(np.float32))


def tf32_bounds(z, w, tau, normalize, want):
    """What rounding the tile products' operands to tf32 (10-bit mantissa) may add to the results, as absolute
    bounds: (lse [N], loss [N], dz row norms [N], dtau).

    The rounding of z is replayed exactly: zt = tf32_round(z) is what the kernels' staging copy holds (cvt.rna;
    test_tf32_forward_is_exact_on_rna_rounded_operands pins it down), so the logits' shift ds_ik = c_i c_k
    (zt_i . zt_k - z_i . z_k) / tau, dlse_i = lse_i(zt) - lse_i(z) and the softmax's factor P_ik(zt) / P_ik(z)
    are known in float64 (c from z itself, as in the kernels). Bounded, worst case: the fp32 sum of a logit's D
    exact tf32 products, a_ik = D 2^-23 |u_i| |u_k| / tau (Cauchy-Schwarz; 2^-23 also covers a truncating
    tensor core); so |dP_ik| <= P_ik rho_ik with rho_ik = expm1(|ds_ik - dlse_i| + a_ik + max_k a_ik). In
    dU_i = sum_k Q_ik c_k z_k (Q_ik = w_i P_ik + w_k P_ki, |dQ_ik| <= w_i P_ik rho_ik + w_k P_ki rho_ki) both
    operands are rounded (2^-11 each) and summed in fp32 over N rows:
    ||d du_i|| <= (1/tau) sum_k (|dQ_ik| + (2^-10 (1 + 2^-11) + N 2^-24) |Q_ik|) |u_k|; dz_i is du_i through
    F.normalize's Jacobian (norm <= c_i). loss_i = lse_i - pos_i, with pos_i an fp32 dot product of z itself.
    dtau = -(1/tau^2) sum_ik w_i P_ik uu_ik + positives moves by <= (1/tau^2) sum_ik |w_i| P_ik (tau (|ds_ik|
    + a_ik) + rho_ik |uu_ik|). P, lse: the float64 reference's."""
    G, J, D = z.shape
    N = G * J
    rows, rounded = z.double().reshape(N, D), tf32_round(z).double().reshape(N, D)
    c = 1.0 / rows.norm(dim=1).clamp_min(1e-12) if normalize else torch.ones(N, dtype=torch.float64)
    u = rows * c[:, None]
    norms = u.norm(dim=1)
    eye = torch.eye(N, dtype=torch.bool)
    uu = u @ u.T
    ds = ((rounded @ rounded.T) * c[:, None] * c[None, :] - uu) / tau
    dlse = ((uu / tau + ds).masked_fill(eye, -math.inf).logsumexp(1) - want[0]).abs()
    acc = (D * 2.0 ** -23 * norms[:, None] * norms[None, :] / tau).masked_fill(eye, 0.0)
    acc_max = acc.max(dim=1).values
    rho = torch.expm1((ds - dlse[:, None]).abs() + acc + acc_max[:, None])
    P = torch.exp(uu / tau - want[0][:, None]).masked_fill(eye, 0.0)
    w64 = w.double().abs()
    Q = w64[:, None] * P + (w64[:, None] * P).T
    dQ = w64[:, None] * P * rho + (w64[:, None] * P * rho).T
    ddu = ((dQ + (2.0 ** -10 * (1 + 2.0 ** -11) + N * 2.0 ** -24) * Q) @ norms) / tau
    ddz = ddu * c if normalize else ddu
    ddtau = (w64 * (P * (tau * (ds.abs() + acc) + rho * uu.abs())).sum(dim=1)).sum() / tau ** 2
    return dlse + acc_max, dlse + acc_max, ddz, ddtau.item()


def check(actual, want, z, w, tau, normalize, what):
    """The kernel's results against the float64 reference: fp32 arithmetic tolerances, plus for float32 (TF32)
    the derived bounds of tf32_bounds (norm-wise relative to the reference, as assert_relative takes them)."""
    lse, pos, loss, dz, dtau = actual
    e_lse, e_pos, e_loss, e_dz, e_dtau = want
    G, J, D = z.shape
    dz_tol = DZ_TOL[z.dtype]
    extra = tf32_bounds(z, w, tau, normalize, want) if z.dtype == torch.float32 else (0.0, 0.0, 0.0, 0.0)
    norm = torch.linalg.vector_norm

    def rel(bound, ref):  # an absolute bound per element -> a norm-wise relative one
        return (norm(torch.as_tensor(bound, dtype=torch.float64)) / max(norm(ref).item(), 1e-300)).item()

    assert_relative(lse, e_lse, FORWARD_TOL + rel(extra[0], e_lse), f"{what} lse")
    assert_relative(pos, e_pos, FORWARD_TOL, f"{what} pos")
    # Degenerate cases whose exact dz is zero: one pair that is the positive (N = 2: loss, dz and dtau are 0), and
    # D = 1 with normalize (u_i = +-1). fp32 leaves rounding-level residues there, bounded against the size of one
    # side of the gradient, 2 max|w| max c / tau (c = 1/||z_i||); tf32 adds its bounds.
    c = 1.0 / z.double().reshape(G * J, D).norm(dim=1).clamp_min(1e-12) if normalize else torch.ones(G * J)
    scale = 2 * w.abs().max().item() * c.max().item() / tau
    if G * J == 2:
        bound = FORWARD_TOL * (e_lse.abs().max() + 1 / tau) + torch.as_tensor(extra[1]).max()
        assert loss.abs().max() <= bound, f"{what} loss {loss}"
        assert abs(dtau.item()) <= 1e-5 * scale + extra[3], f"{what} dtau {dtau.item():.3g}"
    else:
        assert_relative(loss, e_loss, FORWARD_TOL + rel(extra[1], e_loss), f"{what} loss")
        dtau_tol = DTAU_TOL + extra[3] / abs(e_dtau.item())
        assert_relative(dtau.reshape(1), e_dtau.reshape(1), dtau_tol, f"{what} dtau")
    if G * J == 2 or (D == 1 and normalize):
        bound = dz_tol * scale + torch.as_tensor(extra[2]).max().item()
        assert dz.abs().max() <= bound, f"{what} dz {dz.abs().max():.3g}, bound {bound:.3g}"
    else:
        assert_relative(dz, e_dz, dz_tol + rel(extra[2], e_dz), f"{what} dz")


def inputs(G, J, D, dtype, normalize, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(G, J, D, generator=g, dtype=torch.float64) * (1.0 if normalize else 0.3)).to(dtype)
    w = (torch.rand(G * J, generator=g, dtype=torch.float64) + 0.5).float() / (G * J)  # dL/dloss_i
    return z, w


SHAPES = [(1, 2, 1), (1, 2, 129), (22, 3, 1), (22, 3, 129), (200, 3, 1), (200, 3, 129)]
FORMS = [(True, "mean"), (True, "logsumexp"), (False, "mean"), (False, "logsumexp")]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("normalize,positives", FORMS)
@pytest.mark.parametrize("dtype,deterministic", [(torch.bfloat16, False), (torch.float16, True)])
def test_host_policy_matches_reference(host_binary, tmp_path, shape, normalize, positives, dtype, deterministic):
    """Forward lse/pos/loss and backward dz/dtau of the tile code against float64. bf16 runs the symmetric sweep
    (atomics), fp16 the deterministic one; target_blocks varies so that rows are cut into 1 or several chunks."""
    G, J, D = shape
    z, w = inputs(G, J, D, dtype, normalize, seed=G * 7 + D)
    tau = 0.2 if normalize else 0.5
    target = 1 if D == 1 else 4 * G * J
    got = run_host(host_binary, z, w, tau, normalize, positives, deterministic, target, tmp_path)
    assert isinstance(got, tuple), got.stderr
    check(got, expected(z, w, tau, normalize, positives), z, w, tau, normalize,
          f"{shape} {dtype} normalize={normalize} {positives} deterministic={deterministic}")


def test_host_policy_small_temperature_and_mean_reduction(host_binary, tmp_path):
    """tau = 0.02 (logits up to 50, the online maxima matter) with the mean reduction's w = 1/N, fp16: the
    operand scale 2^e keeps the 1/N^2-sized entries of Q c out of fp16's subnormals."""
    z, _ = inputs(200, 3, 64, torch.float16, True, seed=5)
    w = torch.full((600,), 1.0 / 600)
    got = run_host(host_binary, z, w, 0.02, True, "mean", False, 64, tmp_path)
    assert isinstance(got, tuple), got.stderr
    check(got, expected(z, w, 0.02, True, "mean"), z, w, 0.02, True, "tau=0.02")


TF32_SHAPES = [(1, 2, 1), (1, 2, 127), (22, 3, 1), (22, 3, 127), (200, 3, 1), (200, 3, 127)]


@pytest.mark.parametrize("shape", TF32_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("normalize,positives", FORMS)
@pytest.mark.parametrize("deterministic", [False, True])
def test_tf32_host_policy_matches_reference(host_binary, tmp_path, shape, normalize, positives, deterministic):
    """float32 on the TF32 tile kernels (both sweeps): z rounded to tf32, the m16n8k8 fragments, the backward's
    permuted k, and at 127 dims (128 padded) the symmetric backward's single Z_K buffer. D = 129 is no tf32 tile
    shape (fp32 rows wider than 128 take the exact kernels, info_nce_plan.h); 127 pads a column as 129 does for
    the 16-bit kernels. Tolerances: fp32 arithmetic plus tf32_bounds."""
    G, J, D = shape
    z, w = inputs(G, J, D, torch.float32, normalize, seed=G * 5 + D)
    tau = 0.2 if normalize else 0.5
    target = 1 if D == 1 else 4 * G * J
    got = run_host(host_binary, z, w, tau, normalize, positives, deterministic, target, tmp_path)
    assert isinstance(got, tuple), got.stderr
    check(got, expected(z, w, tau, normalize, positives), z, w, tau, normalize,
          f"{shape} tf32 normalize={normalize} {positives} deterministic={deterministic}")


def test_tf32_forward_is_exact_on_rna_rounded_operands(host_binary, tmp_path):
    """The forward's logits are the float64 logits of the operands rounded as cvt.rna.tf32.f32 rounds them, to
    fp32 accuracy (norms from z itself). Half of z is put exactly halfway between two tf32 values, where rounding
    to nearest even (or truncating) gives other operands: the test checks that those references would fail."""
    G, J, D = 64, 3, 64
    z, w = inputs(G, J, D, torch.float32, True, seed=3)
    bits = z.view(torch.int32)
    tie = torch.rand(z.shape, generator=torch.Generator().manual_seed(4)) < 0.5
    z = torch.where(tie, (bits & ~0x1FFF) | 0x1000, bits).view(torch.float32)
    got = run_host(host_binary, z, w, 0.1, True, "mean", False, 16, tmp_path)
    assert isinstance(got, tuple), got.stderr
    rows = z.double().reshape(G * J, D)
    c = 1.0 / rows.norm(dim=1)
    eye = torch.eye(G * J, dtype=torch.bool)

    def lse_of(operands):
        t = operands.double().reshape(G * J, D)
        return ((t @ t.T) * c[:, None] * c[None, :] / 0.1).masked_fill(eye, -math.inf).logsumexp(1)

    want = lse_of(tf32_round(z))
    assert_relative(got[0], want, FORWARD_TOL, "lse of rna-rounded operands")
    for other in (tf32_round(z, ties_away=False), (bits & ~0x1FFF).view(torch.float32)):
        assert normwise_error(lse_of(other), want) > 3 * FORWARD_TOL, "the test cannot tell the rounding modes apart"


def mutant(tmp_path, old, new, name):
    """A copy of csrc with `old` replaced by `new` (exactly once) in csrc/cuda/info_nce_tiles.cuh, built."""
    tree = tmp_path / name
    shutil.copytree(ROOT / "csrc", tree / "csrc")
    tiles = tree / "csrc" / "cuda" / "info_nce_tiles.cuh"
    text = tiles.read_text()
    assert text.count(old) == 1, f"mutation site not found once: {old!r}"
    tiles.write_text(text.replace(old, new))
    return build(tree / "csrc", flags=("-O1",))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_off_by_one_tile_index_fails(tmp_path, dtype):
    """The forward reads column block K + 1 where the tile is (I, K): the comparison must fail."""
    binary = mutant(tmp_path, "const int buf = (tile - t_begin) & 1, K = (I + tile) % nb;\n    P::each_warp",
                    "const int buf = (tile - t_begin) & 1, K = (I + tile + 1) % nb;\n    P::each_warp", "off_by_one")
    z, w = inputs(22, 3, 64, dtype, True, seed=1)
    got = run_host(binary, z, w, 0.2, True, "mean", False, 8, tmp_path)
    assert isinstance(got, tuple), got.stderr
    with pytest.raises(AssertionError):
        check(got, expected(z, w, 0.2, True, "mean"), z, w, 0.2, True, "mutant")


@pytest.mark.parametrize("dtype,D,message", [(torch.bfloat16, 64, "reads a word another"),
                                             (torch.float32, 64, "reads a word another"),
                                             (torch.float32, 127, "writes a word another warp accessed")])
def test_missing_barrier_is_a_race(tmp_path, dtype, D, message):
    """Without the barrier after dU_I, the race recorder stops the run: where Z_K is double-buffered, dU_K (tile
    1) reads the Q c_I exchange before the writes are ordered; where it has one buffer (tf32, 128 dims), tile 0's
    copy of tile 1 overwrites Z_K while other warps still read it."""
    line = "P::barrier();  // every warp's Q c_I is in shared memory (one buffer: every warp is done with Z_K)"
    binary = mutant(tmp_path, line, "", "no_barrier")
    z, w = inputs(22, 3, D, dtype, True, seed=1)
    got = run_host(binary, z, w, 0.2, True, "mean", False, 1, tmp_path)  # one block per row block: t = 0, 1
    assert not isinstance(got, tuple) and got.returncode == 3, "the missing barrier went unnoticed"
    assert "race: warp" in got.stderr and message in got.stderr, got.stderr


def test_unrounded_tf32_operand_is_caught(tmp_path):
    """mma.tf32 on an operand that was not rounded to tf32 (the backward's Q c without cvt.rna) is undefined on
    the device; the host mma stops the run."""
    binary = mutant(tmp_path, "qa[t][j][r] = E::operand(side_i[0]);", "qa[t][j][r] = float_to_bits(side_i[0]);",
                    "unrounded")
    z, w = inputs(22, 3, 64, torch.float32, True, seed=1)
    got = run_host(binary, z, w, 0.2, True, "mean", False, 8, tmp_path)
    assert not isinstance(got, tuple) and got.returncode == 4, "the unrounded operand went unnoticed"
    assert "not rounded to tf32" in got.stderr, got.stderr
