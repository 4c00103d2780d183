"""The CUDA InfoNCE tile code on the CPU: csrc/cuda/info_nce_{tiles,rows}.cuh run under the host execution
policy (csrc/cuda/exec_policy_host.h) by tests/cuda_host/info_nce_host.cpp, built here with g++ (no torch
headers, no CUDA), against simvae_fast.reference in float64.

What runs is the kernels' own code: every block of every launch of one forward and one backward call, with the
launchers' schedule (symmetric sweep, or the deterministic one), each warp's 32 lanes through the PTX fragment
layouts of ldmatrix and mma.m16n8k16, and the race recorder watching shared memory between barriers. What the
emulation cannot see (the tensor core's own rounding, ex2.approx, timing) is listed in that header.

The mutation tests build altered copies of the sources: an off-by-one in a tile index must fail the comparison,
and a deleted barrier must be reported by the race recorder.
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
from tolerances import assert_relative

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "cuda_host" / "info_nce_host.cpp"
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.h")) + sorted((ROOT / "csrc" / "cuda").glob("*.cuh"))
CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++ to build the host driver")

# Norm-wise relative tolerances. The forward is fp32 arithmetic on exact products (~1e-7 seen); dz carries the
# rounding of the tensor-core operand Q c (2^-9 bf16, 2^-12 fp16) and of dz itself (seen: bf16 1.6-2.1e-3,
# fp16 2-5e-4 at N = 66 and 600).
FORWARD_TOL = 1e-5
DZ_TOL = {torch.bfloat16: 5e-3, torch.float16: 2e-3}
DTAU_TOL = 1e-4


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
    header = struct.pack("<8qf", N, D, J, 0 if z.dtype == torch.bfloat16 else 1, int(normalize),
                         int(positives == "logsumexp"), int(deterministic), target_blocks, tau)
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(header + z.reshape(-1).view(torch.int16).numpy().tobytes() + w.numpy().tobytes())
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


def check(actual, want, z, w, tau, normalize, dz_tol, what):
    lse, pos, loss, dz, dtau = actual
    e_lse, e_pos, e_loss, e_dz, e_dtau = want
    assert_relative(lse, e_lse, FORWARD_TOL, f"{what} lse")
    assert_relative(pos, e_pos, FORWARD_TOL, f"{what} pos")
    G, J, D = z.shape
    # Degenerate cases whose exact dz is zero: one pair that is the positive (N = 2: loss, dz and dtau are 0), and
    # D = 1 with normalize (u_i = +-1). fp32 leaves rounding-level residues there, bounded against the size of one
    # side of the gradient, 2 max|w| max c / tau (c = 1/||z_i||).
    c = 1.0 / z.double().reshape(G * J, D).norm(dim=1).clamp_min(1e-12) if normalize else torch.ones(G * J)
    scale = 2 * w.abs().max().item() * c.max().item() / tau
    if G * J == 2:
        assert loss.abs().max() <= FORWARD_TOL * (e_lse.abs().max() + 1 / tau), f"{what} loss {loss}"
        assert abs(dtau.item()) <= 1e-5 * scale, f"{what} dtau {dtau.item():.3g}"
    else:
        assert_relative(loss, e_loss, FORWARD_TOL, f"{what} loss")
        assert_relative(dtau.reshape(1), e_dtau.reshape(1), DTAU_TOL, f"{what} dtau")
    if G * J == 2 or (D == 1 and normalize):
        assert dz.abs().max() <= dz_tol * scale, f"{what} dz {dz.abs().max():.3g}, scale {scale:.3g}"
    else:
        assert_relative(dz, e_dz, dz_tol, f"{what} dz")


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
    check(got, expected(z, w, tau, normalize, positives), z, w, tau, normalize, DZ_TOL[dtype],
          f"{shape} {dtype} normalize={normalize} {positives} deterministic={deterministic}")


def test_host_policy_small_temperature_and_mean_reduction(host_binary, tmp_path):
    """tau = 0.02 (logits up to 50, the online maxima matter) with the mean reduction's w = 1/N, fp16: the
    operand scale 2^e keeps the 1/N^2-sized entries of Q c out of fp16's subnormals."""
    z, _ = inputs(200, 3, 64, torch.float16, True, seed=5)
    w = torch.full((600,), 1.0 / 600)
    got = run_host(host_binary, z, w, 0.02, True, "mean", False, 64, tmp_path)
    assert isinstance(got, tuple), got.stderr
    check(got, expected(z, w, 0.02, True, "mean"), z, w, 0.02, True, DZ_TOL[torch.float16], "tau=0.02")


def mutant(tmp_path, old, new, name):
    """A copy of csrc with `old` replaced by `new` (exactly once) in csrc/cuda/info_nce_tiles.cuh, built."""
    tree = tmp_path / name
    shutil.copytree(ROOT / "csrc", tree / "csrc")
    tiles = tree / "csrc" / "cuda" / "info_nce_tiles.cuh"
    text = tiles.read_text()
    assert text.count(old) == 1, f"mutation site not found once: {old!r}"
    tiles.write_text(text.replace(old, new))
    return build(tree / "csrc", flags=("-O1",))


def test_off_by_one_tile_index_fails(tmp_path):
    """The forward reads column block K + 1 where the tile is (I, K): the comparison must fail."""
    binary = mutant(tmp_path, "const int buf = (tile - t_begin) & 1, K = (I + tile) % nb;\n    P::each_warp",
                    "const int buf = (tile - t_begin) & 1, K = (I + tile + 1) % nb;\n    P::each_warp", "off_by_one")
    z, w = inputs(22, 3, 64, torch.bfloat16, True, seed=1)
    got = run_host(binary, z, w, 0.2, True, "mean", False, 8, tmp_path)
    assert isinstance(got, tuple), got.stderr
    with pytest.raises(AssertionError):
        check(got, expected(z, w, 0.2, True, "mean"), z, w, 0.2, True, DZ_TOL[torch.bfloat16], "mutant")


def test_missing_barrier_is_a_race(tmp_path):
    """Without the barrier between writing Q c_I to shared memory and reading it (ldmatrix.trans) for dU_K,
    the race recorder stops the run."""
    binary = mutant(tmp_path, "    P::barrier();  // every warp's Q c_I is in shared memory\n", "", "no_barrier")
    z, w = inputs(22, 3, 64, torch.bfloat16, True, seed=1)
    got = run_host(binary, z, w, 0.2, True, "mean", False, 8, tmp_path)
    assert not isinstance(got, tuple) and got.returncode == 3, "the missing barrier went unnoticed"
    assert "race: warp" in got.stderr and "barrier" in got.stderr, got.stderr
