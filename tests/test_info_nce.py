"""Fused InfoNCE backends (cpu; triton under the interpreter) against simvae_fast.reference.info_nce.

Loss, dL/dz and dL/dtau on fresh random inputs, compared relative to the float64 reference's own magnitude
(tests/tolerances.py: norm-wise and per element, nothing clamped to 1), mean-reduced cases with gradients of
~1e-4 included; NT-Xent as an explicit loop; the closed form for identical views; no N x N allocation on the
CPU; the same bits on every run and thread count; bad input and NaN; opcheck, gradcheck, torch.compile.

Shown to fail on broken CPU kernels (once, by hand): dz = 0 fails every gradient comparison (norm-wise error
1); without the column product dU_K += M^T U_I every case of more than one tile (N > 128) fails, the
mean-reduced one with dz ~1e-4 by a norm-wise error of 0.016 that a comparison clamped to 1 would pass; with
the one-shift path forced on every tile the float32 tau = 0.01 unnormalised cases fail.
"""
import math

import pytest
import torch

import simvae_fast
from simvae_fast import reference
from simvae_fast.backends import backends
from tolerances import assert_relative

USABLE = [name for name in ("cpu", "triton") if backends()[name].usable]
ON_CPU = [pytest.param(name, marks=pytest.mark.skipif(name not in USABLE, reason=f"{name} not usable"))
          for name in ("cpu", "triton")]

# (G, J, D, normalize, positives, tau, reduction): every value of each axis appears at least once.
CASES = [
    (1, 2, 1, True, "mean", 0.5, "mean"),
    (2, 3, 7, False, "logsumexp", 0.1, "none"),
    (5, 4, 64, True, "logsumexp", 0.01, "sum"),
    (33, 2, 129, False, "mean", 2.0, "mean"),
    (33, 3, 64, False, "mean", 0.01, "none"),  # unnormalised at tau = 0.01: logits in the thousands
    (5, 2, 129, True, "logsumexp", 2.0, "mean"),
    (2, 4, 1, False, "logsumexp", 0.5, "sum"),
    (33, 4, 7, True, "mean", 0.1, "sum"),
    # N = 2100: 9 blocks of 256 rows on the CPU (an odd count: a bye in every round), 2 tiles per block, a
    # partial last block; mean-reduced, so dz is ~1e-4 (first case) and held to the same relative standard.
    (1050, 2, 33, True, "mean", 0.5, "mean"),
    (700, 3, 17, False, "logsumexp", 0.07, "mean"),
    (700, 3, 17, False, "mean", 0.01, "mean"),  # logits ~1e3 of every size: the tiles' two-shift path
]
TRITON_CASES = [CASES[1], CASES[2], CASES[5]]  # the interpreter is slow: a subset
# Outputs are poisoned (NaN in every fresh allocation) and assert_relative requires finite values where the
# reference is finite: an element a kernel never wrote fails the comparison.
pytestmark = pytest.mark.usefixtures("poison_empty_tensors")
TOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 3e-2}


def run(backend, z, tau, normalize, positives, reduction):
    """Loss and (dL/dz, dL/dtau) for the upstream gradient of the sum of the loss times fixed weights."""
    z = z.detach().clone().requires_grad_(True)
    t = torch.tensor(tau, dtype=z.dtype).requires_grad_(True)
    if backend == "reference":
        loss = reference.info_nce(z, t, normalize, positives, reduction)
    else:
        loss = simvae_fast.info_nce(z, temperature=t, normalize=normalize, positives=positives,
                                    reduction=reduction, backend=backend)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    dz, dt = torch.autograd.grad((loss * weights).sum(), (z, t))
    return loss.detach(), dz, dt


def compare(backend, case, dtype, seed=0):
    G, J, D, normalize, positives, tau, reduction = case
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(G, J, D, generator=gen, dtype=torch.float64) * (1.0 if normalize else 0.3)
    z = z.to(dtype)
    # The reference in float64 on the same (rounded) inputs: the kernels accumulate in fp32 or fp64.
    expected = run("reference", z.double(), tau, normalize, positives, reduction)
    actual = run(backend, z, tau, normalize, positives, reduction)
    assert actual[0].dtype == dtype and actual[0].shape == expected[0].shape
    assert actual[1].dtype == dtype and actual[1].shape == z.shape
    for a, e, what in zip(actual, expected, ("loss", "dz", "dtau")):
        assert_relative(a, e, TOL[dtype], f"{backend} {case} {dtype} {what}")


@pytest.mark.skipif("cpu" not in USABLE, reason="C++ extension not built (test_backends fails then)")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_matches_reference(case, dtype):
    compare("cpu", case, dtype)


@pytest.mark.skipif("triton" not in USABLE, reason="triton not installed (test_backends fails then)")
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_matches_reference(case, dtype):
    compare("triton", case, dtype)


@pytest.mark.parametrize("backend", ON_CPU)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(backend, dtype):
    compare(backend, (5, 3, 64, True, "mean", 0.1, "none"), dtype)
    compare(backend, (2, 2, 7, False, "logsumexp", 0.5, "mean"), dtype)


def nt_xent_loop(z, tau):
    """SimCLR's NT-Xent for two views, written out: rows 2g and 2g+1 are a positive pair."""
    rows = []
    for r in z.reshape(-1, z.shape[-1]).tolist():
        norm = max(math.sqrt(sum(x * x for x in r)), 1e-12)
        rows.append([x / norm for x in r])

    def sim(a, b):
        return sum(x * y for x, y in zip(a, b)) / tau

    total = 0.0
    for i in range(len(rows)):
        partner = i ^ 1
        denominator = sum(math.exp(sim(rows[i], rows[k])) for k in range(len(rows)) if k != i)
        total += -math.log(math.exp(sim(rows[i], rows[partner])) / denominator)
    return total / len(rows)


@pytest.mark.parametrize("backend", ["reference", *ON_CPU])
@pytest.mark.parametrize("positives", ["mean", "logsumexp"])
def test_two_views_is_nt_xent(backend, positives):
    z = torch.randn(6, 2, 9, dtype=torch.float64)
    loss = simvae_fast.info_nce(z, temperature=0.2, positives=positives, backend=backend)
    assert loss.item() == pytest.approx(nt_xent_loop(z, 0.2), rel=1e-10)


@pytest.mark.parametrize("backend", ["reference", *ON_CPU])
@pytest.mark.parametrize("positives", ["mean", "logsumexp"])
def test_identical_views_closed_form(backend, positives):
    """All N rows equal, normalize=True: every logit is 1/tau, so LSE_{k != i} = 1/tau + log(N - 1), the mean
    positive is 1/tau and the positives' LSE is 1/tau + log(J - 1): L = log(N - 1) ("mean") or
    log((N - 1)/(J - 1)) ("logsumexp"), whatever tau. Since sum_k P_ik = sum_k W_ik = 1 and the gradient in
    u_i is parallel to u_i (projected out by the normalisation), dL/dz = 0 and dL/dtau = 0."""
    G, J, tau = 7, 3, 0.07
    N = G * J
    z = (3.7 * torch.randn(1, 1, 16, dtype=torch.float64)).expand(G, J, 16).clone().requires_grad_(True)
    t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    loss = simvae_fast.info_nce(z, temperature=t, positives=positives, backend=backend)
    closed = math.log(N - 1) if positives == "mean" else math.log((N - 1) / (J - 1))
    assert loss.item() == pytest.approx(closed, rel=1e-9)
    dz, dt = torch.autograd.grad(loss, (z, t))
    assert dz.abs().max().item() < 1e-9 and abs(dt.item()) < 1e-9


@pytest.mark.skipif("cpu" not in USABLE, reason="cpu backend not usable")
def test_cpu_allocates_no_n_by_n_matrix():
    """Forward + backward at N = 4096, D = 64: peak of live tensor allocations < 1/20 of one N x N fp32."""
    N, D = 4096, 64
    z = torch.randn(N // 2, 2, D, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        simvae_fast.info_nce(z, temperature=0.1, backend="cpu").backward()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    assert events and z.grad is not None
    assert peak < N * N * 4 / 20, f"peak {peak} bytes"


@pytest.mark.skipif("cpu" not in USABLE, reason="cpu backend not usable")
def test_cpu_same_bits_every_run_and_thread_count():
    """The CPU kernel's block pairs run in rounds whose pairs share no rows, and the block size depends on N
    only: every row's sums come in one order whatever thread runs them, so loss, dz and dtau are the same
    bits on every run and for 1, 2 or 3 threads (9 blocks here: several pairs per round)."""
    z = torch.randn(1050, 2, 33, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3, 2):
            torch.set_num_threads(n)
            results.append(run("cpu", z, 0.1, True, "logsumexp", "none"))
    finally:
        torch.set_num_threads(threads)
    for n, result in zip((2, 3, 2), results[1:]):
        for what, a, e in zip(("loss", "dz", "dtau"), result, results[0]):
            assert torch.equal(a, e), f"{what} with {n} threads differs from 1 thread"


@pytest.mark.parametrize("backend", ["reference", *ON_CPU])
def test_bad_input(backend):
    z = torch.randn(3, 2, 4)
    cases = [
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(temperature=torch.tensor(-0.5)), ValueError, "temperature"),
        (dict(temperature=torch.tensor(0.5, device="meta")), ValueError, "temperature"),
        (dict(positives="max"), ValueError, "positives"),
        (dict(reduction="max"), ValueError, "reduction"),
    ]
    for kwargs, error, name in cases:
        with pytest.raises(error, match=name):
            simvae_fast.info_nce(z, backend=backend, **kwargs)
    for bad in (torch.randn(3, 1, 4), torch.randn(6, 4), torch.randn(2, 3, 2, 4)):
        with pytest.raises(ValueError, match="z"):
            simvae_fast.info_nce(bad, backend=backend)
    with pytest.raises(TypeError, match="z"):
        simvae_fast.info_nce(torch.ones(3, 2, 4, dtype=torch.int64), backend=backend)


@pytest.mark.parametrize("backend", ["reference", *ON_CPU])
def test_nan_propagates(backend):
    """A NaN anywhere in z reaches every row's denominator: the loss and the gradient are NaN (no error)."""
    z = torch.randn(4, 2, 8)
    z[1, 0, 3] = float("nan")
    z.requires_grad_(True)
    rows = simvae_fast.info_nce(z, reduction="none", backend=backend)
    assert torch.isnan(rows).all()
    rows.sum().backward()
    assert torch.isnan(z.grad).any()


@pytest.mark.parametrize("backend", ON_CPU)
def test_opcheck(backend):
    from simvae_fast.ops import info_nce as ops

    z = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    forward = ops.FORWARD[backend]
    torch.library.opcheck(forward, (z, t, True, False))
    _, lse, pos = forward(z.detach(), t.detach(), True, True)
    backward = (torch.ops.simvae_fast.info_nce_backward if backend == "cpu"
                else torch.ops.simvae_fast.info_nce_triton_backward)
    torch.library.opcheck(backward, (torch.rand(6, dtype=torch.float64), z.detach(), t.detach(), lse, pos, True,
                                     True))


@pytest.mark.parametrize("backend", ON_CPU)
@pytest.mark.parametrize("positives", ["mean", "logsumexp"])
def test_gradcheck(backend, positives):
    shape = (3, 3, 4) if backend == "cpu" else (2, 2, 3)  # the interpreter is slow
    z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z, t: simvae_fast.info_nce(z, temperature=t, positives=positives, reduction="none", backend=backend),
        (z, t),
    )


@pytest.mark.skipif("cpu" not in USABLE, reason="cpu backend not usable")
def test_compile_fullgraph():
    def step(z, t):
        return simvae_fast.info_nce(z, temperature=t, positives="logsumexp", backend="cpu") * 2.0

    z = torch.randn(5, 3, 8, requires_grad=True)
    t = torch.tensor(0.2, requires_grad=True)
    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(z, t)
    dz, dt = torch.autograd.grad(loss, (z, t))
    expected = step(z, t)
    ez, et = torch.autograd.grad(expected, (z, t))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(dz, ez)
    torch.testing.assert_close(dt, et)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[4], (300, 2, 128, True, "mean", 0.1, "mean")])
def test_gpu_matches_reference(backend, dtype, case):
    G, J, D, normalize, positives, tau, reduction = case
    z = (torch.randn(G, J, D, dtype=torch.float64) * (1.0 if normalize else 0.3)).to(dtype).cuda()
    expected = run("reference", z.double(), tau, normalize, positives, reduction)
    actual = run(backend, z, tau, normalize, positives, reduction)
    tol = {torch.float32: 2e-3}.get(dtype, TOL[dtype])  # fp32 on the GPU: still ieee, but other sum orders
    for a, e, what in zip(actual, expected, ("loss", "dz", "dtau")):
        assert_relative(a, e, tol, f"{backend} {case} {dtype} {what}")


@pytest.mark.parametrize("backend", ON_CPU)
def test_float32_temperature_with_other_dtype_z(backend):
    """A float32 learnable temperature works with z of another dtype; its gradient comes back in float32."""
    z = torch.randn(3, 2, 5, dtype=torch.float64)
    t32 = torch.tensor(0.3, requires_grad=True)
    t64 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    simvae_fast.info_nce(z, temperature=t32, backend=backend).backward()
    reference.info_nce(z, t64).backward()
    assert t32.grad.dtype == torch.float32
    assert_relative(t32.grad, t64.grad, 1e-5, f"{backend} float32 dtau")
