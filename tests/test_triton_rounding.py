"""The Triton kernels as the GPU computes them, seen through the interpreter (TRITON_INTERPRET=1).

The interpreter upcasts fp16/bf16 tiles to fp32 (its half-precision arithmetic is wrong), which used to hide the
one cast the compiled InfoNCE backward makes: the tile matrix (G_ik + G_ki) c_k rounded to z's dtype for
tl.dot. kernels/info_nce_tiles.dot_operand now applies exactly that rounding under UPCAST too, so these tests
see the GPU's operand:
- test_operand_rounding_is_the_gpu_cast: the emulation is torch's round-to-nearest-even cast, bit for bit
  (the interpreter's own fp32 -> bf16 cast truncates).
- test_mean_reduced_half_precision_at_4096_rows: without the 2^k operand scale the fp16 operand (entries ~
  1/N^2) flushes to zero: with FP16_SCALE forced off in the launcher this test failed (dz norm-wise error
  5.7e-3 > 3e-3 at N = 4096, tau = 0.5; 1.5e-2 at 8192: benchmarks/results/triton_kernels.md); a kernel returning
  dz = 0 (error 1) or dropping the negatives' exp terms (error ~0.5, asserted below on the reference itself)
  fails it as well.
- test_both_backward_schedules_match_reference: the atomic (symmetric) and the deterministic schedule, at sizes
  that cross row blocks, chunks of tiles and output-dim chunks; every output element written (poisoned empties).
  Shown to fail: with the column-side atomic_add masked off, the atomic case failed (dz error 0.17 > 1e-5).
- empty inputs launch no kernel; fp32 products follow torch's TF32 switch.
"""
import math

import pytest
import torch
import triton
import triton.language as tl

import simvae_fast
from simvae_fast import reference
from simvae_fast.backends import backends, interpreting

from tolerances import assert_relative, normwise_error

pytestmark = [
    pytest.mark.skipif(not backends()["triton"].usable, reason="triton not installed (test_backends fails then)"),
    pytest.mark.usefixtures("poison_empty_tensors"),
]


@triton.jit
def _round_kernel(X, Y, N, BLOCK: tl.constexpr, ZT: tl.constexpr):
    from simvae_fast.kernels.info_nce_tiles import dot_operand

    idx = tl.arange(0, BLOCK)
    x = tl.load(X + idx, mask=idx < N)
    tl.store(Y + idx, dot_operand(x, ZT, True), mask=idx < N)


@pytest.mark.skipif(not interpreting(), reason="the emulation exists for the interpreter")
@pytest.mark.parametrize("dtype, zt", [(torch.bfloat16, tl.bfloat16), (torch.float16, tl.float16)])
def test_operand_rounding_is_the_gpu_cast(dtype, zt):
    g = torch.Generator().manual_seed(1)
    tiny = torch.finfo(dtype).tiny
    x = torch.cat([
        torch.randn(200, generator=g) * 10.0 ** torch.randint(-9, 5, (200,), generator=g),
        torch.tensor([tiny, tiny / 3, tiny * 2**-9, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11, -2.5e-8]),
    ]).float()
    y = torch.empty_like(x)
    _round_kernel[(1,)](x, y, x.numel(), BLOCK=256, ZT=zt)
    assert torch.equal(y, x.to(dtype).float())


def _loss_and_dz(backend, z, tau):
    z = z.detach().clone().requires_grad_(True)
    t = torch.tensor(tau, dtype=torch.float64 if z.dtype == torch.float64 else torch.float32)
    loss = (reference.info_nce(z, t) if backend == "reference"
            else simvae_fast.info_nce(z, temperature=t, backend=backend))
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 3e-3), (torch.bfloat16, 6e-3)])
def test_mean_reduced_half_precision_at_4096_rows(dtype, tol):
    """N = 4096 rows, mean reduction, tau = 0.5: every G_ik ~ 1/N^2 = 6e-8, under fp16's smallest normal."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2048, 2, 16, generator=g, dtype=torch.float64).to(dtype)
    _, dz_ref = _loss_and_dz("reference", z.double(), 0.5)
    loss, dz = _loss_and_dz("triton", z, 0.5)
    assert_relative(dz, dz_ref, tol, f"dz {dtype}")
    # The tolerance separates: a dz without the negatives' (denominator's) term, 1.6% of dz here, is outside it.
    zp = z.double().requires_grad_(True)
    u = torch.nn.functional.normalize(zp, dim=-1)
    (-(u[:, 0] * u[:, 1]).sum() / 0.5 / zp.shape[0]).backward()  # the positives' term alone
    assert normwise_error(zp.grad, dz_ref) > 2 * tol


SCHEDULE_CASES = [  # (G, J, D, normalize, positives, tau, dtype): N = 300 crosses 5 row blocks and 3 chunks
    (100, 3, 10, True, "mean", 0.1, torch.float32),
    (100, 3, 10, True, "logsumexp", 0.2, torch.bfloat16),
    (43, 3, 129, False, "mean", 0.5, torch.float16),
    (20, 3, 300, True, "logsumexp", 0.5, torch.float64),  # D chunks and 3 output-dim chunks
    (20, 3, 300, False, "mean", 1.0, torch.bfloat16),
]
TOL = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.mark.parametrize("symmetric", [True, False], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("case", SCHEDULE_CASES)
def test_both_backward_schedules_match_reference(monkeypatch, symmetric, case):
    from simvae_fast.kernels import info_nce as kernels

    monkeypatch.setattr(kernels, "_symmetric_backward", lambda: symmetric)
    G, J, D, normalize, positives, tau, dtype = case
    g = torch.Generator().manual_seed(G * D)
    z = (torch.randn(G, J, D, generator=g, dtype=torch.float64) * (1.0 if normalize else 0.3)).to(dtype)
    results = []
    for backend, zz in (("reference", z.double()), ("triton", z)):
        zz = zz.clone().requires_grad_(True)
        t = torch.tensor(tau, dtype=torch.float64 if zz.dtype == torch.float64 else torch.float32,
                         requires_grad=True)
        kwargs = dict(temperature=t, normalize=normalize, positives=positives, reduction="none")
        rows = (reference.info_nce(zz, t, normalize, positives, "none") if backend == "reference"
                else simvae_fast.info_nce(zz, backend=backend, **kwargs))
        weights = torch.linspace(0.5, 1.5, rows.numel(), dtype=rows.dtype)
        results.append((rows.detach(), *torch.autograd.grad((rows * weights).sum(), (zz, t))))
    for e, a, what in zip(*results, ("loss", "dz", "dtau")):
        assert_relative(a, e, TOL[dtype], f"{case} {what}")


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("a kernel was launched for an empty input")


def test_empty_info_nce_launches_nothing(monkeypatch):
    from simvae_fast.kernels import info_nce as kernels

    for name in ("inverse_norm_kernel", "forward_tiles_kernel", "forward_finish_kernel", "backward_tiles_kernel",
                 "backward_finish_kernel"):
        monkeypatch.setattr(kernels, name, _NoLaunch())
    z = torch.randn(0, 2, 8, requires_grad=True)
    loss = simvae_fast.info_nce(z, backend="triton")
    assert math.isnan(loss.item())  # a mean over no rows, as torch's
    loss.backward()
    assert z.grad.shape == z.shape
    assert simvae_fast.info_nce(z, backend="triton", reduction="none").shape == (0,)
    for positives in reference.POSITIVES:
        z = torch.randn(3, 3, 0, dtype=torch.float64, requires_grad=True)
        t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        rows = simvae_fast.info_nce(z, temperature=t, positives=positives, reduction="none", backend="triton")
        expected = reference.info_nce(z, t, True, positives, "none")
        assert_relative(rows, expected, 1e-12, "D = 0 loss")
        dz, dt = torch.autograd.grad(rows.sum(), (z, t))
        assert dz.shape == z.shape and dt.item() == 0.0


def test_empty_latent_launches_nothing(monkeypatch):
    from simvae_fast.kernels import latent as kernels

    monkeypatch.setattr(kernels, "_latent_forward_kernel", _NoLaunch())
    monkeypatch.setattr(kernels, "_latent_backward_kernel", _NoLaunch())
    for shape in ((0, 2, 5), (4, 2, 0)):
        for prior in reference.PRIORS:
            mu = torch.randn(shape, dtype=torch.float64, requires_grad=True)
            logvar = torch.randn(shape, dtype=torch.float64, requires_grad=True)
            got = simvae_fast.simvae_latent(mu, logvar, prior=prior, seed=3, backend="triton")
            expected = simvae_fast.simvae_latent(mu, logvar, prior=prior, seed=3, backend="reference")
            for a, e, what in zip(got, expected, ("z", "log_prior", "entropy")):
                assert_relative(a, e, 1e-12, f"{shape} {prior} {what}")
            sum(o.sum() for o in got).backward()
            assert mu.grad.shape == shape and logvar.grad.shape == shape


def test_fp32_products_follow_torch_matmul_precision():
    from simvae_fast.kernels.launch import fp32_dot_precision

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert fp32_dot_precision() == "ieee"
        torch.set_float32_matmul_precision("high")
        assert fp32_dot_precision() == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)
