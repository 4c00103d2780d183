"""The CUDA backend's behaviour that only a GPU shows (every test here is @pytest.mark.gpu and skipped without
one): the tensor-core InfoNCE against float64 at the sizes that matter, its two backward sweeps (atomic and
deterministic), the paths around it (padded copy for D % 8 != 0, a misaligned z, the float32 upcast for
D > 256), float32 on either side of torch's TF32 switch, empty inputs of both ops, and the latent backward from
regenerated noise.
The tile code itself is checked on the CPU by tests/test_cuda_host.py.
"""
import pytest
import torch

import simvae_fast
from simvae_fast import reference
from tolerances import assert_relative, normwise_error

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("poison_empty_tensors")]
DZ_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


def info_nce_and_grads(z, tau, positives="mean", normalize=True, backend="cuda"):
    z = z.detach().clone().requires_grad_(True)
    t = torch.tensor(tau, dtype=torch.float32 if z.dtype != torch.float64 else z.dtype, device=z.device,
                     requires_grad=True)
    if backend == "reference":
        loss = reference.info_nce(z, t, normalize, positives, "mean")
    else:
        loss = simvae_fast.info_nce(z, temperature=t, normalize=normalize, positives=positives, backend=backend)
    dz, dt = torch.autograd.grad(loss, (z, t))
    return loss.detach(), dz, dt


def against_reference(z, tau, positives="mean", normalize=True):
    got = info_nce_and_grads(z, tau, positives, normalize)
    want = info_nce_and_grads(z.double(), tau, positives, normalize, backend="reference")
    for a, e, what, tol in zip(got, want, ("loss", "dz", "dtau"), (1e-4, DZ_TOL[z.dtype], 1e-3)):
        assert_relative(a, e, tol, f"{tuple(z.shape)} {z.dtype} {what}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,tau", [((4096, 2, 128), 0.1), ((4096, 2, 128), 0.5), ((300, 3, 129), 0.2),
                                       ((33, 2, 10), 0.05), ((17, 3, 256), 1.0)])
def test_tensor_cores_match_reference(dtype, shape, tau):
    """Mean reduction (dL/dloss_i = 1/N, issue 13's fp16 defect), N up to 8192, both sweeps."""
    z = torch.randn(*shape, device="cuda").to(dtype)
    against_reference(z, tau)  # poison_empty_tensors turns deterministic mode on: the full sweep
    torch.use_deterministic_algorithms(False)
    against_reference(z, tau, positives="logsumexp")  # the symmetric sweep with atomics


@pytest.fixture
def tf32_switch():
    """Sets torch's TF32 switch for float32 matrix products (what at::globalContext().allowTF32CuBLAS() reads);
    restores it after the test."""
    previous = torch.backends.cuda.matmul.allow_tf32
    yield lambda on: setattr(torch.backends.cuda.matmul, "allow_tf32", on)
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("shape,tau", [((4096, 2, 128), 0.1), ((300, 3, 33), 0.2)])
def test_float32_follows_the_tf32_switch(tf32_switch, shape, tau):
    """float32 with the TF32 switch off runs the exact FFMA kernels, with it on (D <= 128) the TF32 tensor cores:
    both match float64 (tf32 tolerances from its 10-bit mantissa: tests/test_cuda_host.py's tf32_bounds gives
    ~1e-3 for dz), and the switch is what decides: with it on, dz carries tf32's rounding, many times the exact
    kernels' error. Both backward sweeps."""
    z = torch.randn(*shape, device="cuda")
    want = info_nce_and_grads(z.double(), tau, backend="reference")
    for deterministic in (True, False):
        torch.use_deterministic_algorithms(deterministic)
        results = {}
        for on, tols in ((False, (1e-4, 2e-4, 1e-3)), (True, (1e-4, 2e-3, 2e-3))):
            tf32_switch(on)
            results[on] = info_nce_and_grads(z, tau)
            for a, e, what, tol in zip(results[on], want, ("loss", "dz", "dtau"), tols):
                assert_relative(a, e, tol, f"{shape} tf32={on} deterministic={deterministic} {what}")
        exact, tf32 = (normwise_error(results[on][1], want[1]) for on in (False, True))
        assert tf32 > 5 * exact, f"TF32 on: dz error {tf32:.3g}, off: {exact:.3g} (did the switch pick the path?)"


def test_float32_wider_than_128_stays_exact_with_tf32_on(tf32_switch):
    """fp32 rows wider than the TF32 tile kernels take (D = 200) run the exact kernels either way: bitwise the
    same results with the switch on and off."""
    z = torch.randn(100, 2, 200, device="cuda")
    tf32_switch(False)
    off = info_nce_and_grads(z, 0.2)
    tf32_switch(True)
    on = info_nce_and_grads(z, 0.2)
    assert all(torch.equal(a, b) for a, b in zip(on, off))


def test_deterministic_backward_is_bitwise_repeatable():
    z = torch.randn(1024, 2, 128, device="cuda", dtype=torch.bfloat16)
    first, second = info_nce_and_grads(z, 0.2), info_nce_and_grads(z, 0.2)
    assert torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])


def test_misaligned_and_wide_rows():
    """z at an odd storage offset (copied to an aligned, padded workspace) and D = 300 (float32 upcast)."""
    base = torch.randn(64 * 2 * 72 + 1, device="cuda", dtype=torch.float16)
    against_reference(base[1:].view(64, 2, 72), 0.3)
    against_reference(torch.randn(40, 2, 300, device="cuda", dtype=torch.bfloat16), 0.3)


def test_empty_inputs_launch_nothing_and_match_reference():
    for shape in ((0, 2, 8), (3, 2, 0)):
        z = torch.zeros(shape, device="cuda", dtype=torch.bfloat16)
        loss = simvae_fast.info_nce(z, temperature=0.5, reduction="none", backend="cuda")
        expected = reference.info_nce(z.double().cpu(), 0.5, reduction="none")
        assert loss.shape == expected.shape
        torch.testing.assert_close(loss.double().cpu(), expected)
        mu = torch.zeros(shape, device="cuda")
        out = simvae_fast.simvae_latent(mu, mu.clone(), seed=3, backend="cuda")
        assert out.z.shape == mu.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_latent_backward_from_regenerated_noise(dtype):
    """J = 5 views, noise from (seed, offset): the backward regenerates it once per element (shared memory
    between its two passes) and must give the reference's gradients for that same noise."""
    mu = torch.randn(64, 5, 96, device="cuda").to(dtype).requires_grad_(True)
    logvar = (0.3 * torch.randn(64, 5, 96, device="cuda")).to(dtype).requires_grad_(True)
    out = simvae_fast.simvae_latent(mu, logvar, seed=11, backend="cuda")
    eps = reference.philox_randn(11, 0, tuple(mu.shape), device="cuda").double()
    mu64, lv64 = mu.detach().double().requires_grad_(True), logvar.detach().double().requires_grad_(True)
    z64 = reference.reparameterize(mu64, lv64, eps)
    ref = (z64, reference.grouped_prior_log_prob(z64), reference.gaussian_entropy(lv64))
    upstream = (torch.randn_like(mu64), torch.randn(64, dtype=torch.float64, device="cuda"),
                torch.randn(64, dtype=torch.float64, device="cuda"))
    got = torch.autograd.grad((out.z.double() * upstream[0]).sum() + (out.log_prior.double() * upstream[1]).sum()
                              + (out.entropy.double() * upstream[2]).sum(), (mu, logvar))
    want = torch.autograd.grad((ref[0] * upstream[0]).sum() + (ref[1] * upstream[1]).sum()
                               + (ref[2] * upstream[2]).sum(), (mu64, lv64))
    tol = {torch.float32: 1e-4}.get(dtype, 1e-2)
    for a, e, what in zip(got, want, ("dmu", "dlogvar")):
        assert_relative(a, e, tol, f"{dtype} {what}")
