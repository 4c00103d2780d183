"""Property tests: every public op on every backend usable here against the reference in float64, over random
shapes (empty ones, G = 0 or D = 0, sizes 1 and odd ones included; on the CPU up to N = 320 rows, several of
the InfoNCE kernel's 128-row tiles), dtypes, priors, positive forms, temperatures, and non-contiguous or
offset views of larger tensors. A fixed, derandomised example budget keeps CI bounded; the Triton-interpreter
cases are few and small."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simvae_fast
from simvae_fast import reference
from simvae_fast.backends import backends

KERNELS = [b for b in ("cpu", "triton") if backends()[b].usable]
BUDGET = {"cpu": 40, "triton": 6}
LIMIT = {"cpu": 64, "triton": 6}  # largest G per backend (the interpreter is slow)
TOL = {torch.float64: 1e-9, torch.float32: 2e-5}


def budget(backend):
    return settings(max_examples=BUDGET[backend], deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def latent_inputs(draw, backend, min_views=1):
    """(tensor of shape [G, J, D], as a contiguous, transposed, strided or offset view) plus the dtype."""
    G = draw(st.integers(0, LIMIT[backend]))
    J = draw(st.integers(min_views, 5))
    D = draw(st.sampled_from([0, 1, 2, 3, 7, 17, 33] if backend == "cpu" else [0, 1, 3, 17]))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    layout = draw(st.sampled_from(["contiguous", "strided", "offset", "permuted"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return G, J, D, dtype, layout, seed


def make(shape, dtype, layout, seed, scale=1.0):
    """A [G, J, D] tensor with the given memory layout and float64 values fixed by the seed."""
    G, J, D = shape
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":
        t = torch.randn(G, J, 2 * D, generator=g, dtype=torch.float64)[:, :, ::2]
    elif layout == "offset":
        t = torch.randn(G * J * D + 5, generator=g, dtype=torch.float64)[5:].view(G, J, D)
    elif layout == "permuted":
        t = torch.randn(D, J, G, generator=g, dtype=torch.float64).permute(2, 1, 0)
    else:
        t = torch.randn(G, J, D, generator=g, dtype=torch.float64)
    return (t * scale).to(dtype)


def grads(outputs, inputs, seed):
    """Gradients of sum(w * output) for fixed random w per output, and the outputs in float64."""
    g = torch.Generator().manual_seed(seed + 1)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outputs]
    total = sum((w * o).sum() for w, o in zip(weights, outputs))
    return [o.detach().double() for o in outputs] + [d.double() for d in torch.autograd.grad(total, inputs)]


def assert_all_close(got, expected, dtype, magnitudes=None):
    """Errors relative to each output's scale: its largest finite value, at least 1, at least the magnitude of
    the terms it is summed from (`magnitudes`), since rounding errors scale with those, not with the result.
    NaN where the reference is NaN (an empty mean)."""
    for k, (a, e) in enumerate(zip(got, expected)):
        finite = e[torch.isfinite(e)]
        scale = max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0, magnitudes[k] if magnitudes else 0.0)
        torch.testing.assert_close(a / scale, e / scale, rtol=0, atol=TOL[dtype], equal_nan=True)


@pytest.mark.parametrize("backend", KERNELS)
def test_simvae_latent_matches_reference(backend):
    @budget(backend)
    @given(inputs=latent_inputs(backend), prior=st.sampled_from(reference.PRIORS),
           sigma2=st.sampled_from([0.01, 0.15, 2.0]), noise=st.sampled_from(["eps", "seed"]))
    def check(inputs, prior, sigma2, noise):
        G, J, D, dtype, layout, seed = inputs
        if J == 1:
            prior = "standard"
        mu = make((G, J, D), dtype, layout, seed).requires_grad_()
        logvar = make((G, J, D), dtype, layout, seed + 7, scale=0.5).requires_grad_()
        eps = make((G, J, D), dtype, layout, seed + 13) if noise == "eps" else None
        kwargs = dict(sigma2=sigma2, prior=prior, eps=eps, seed=seed, offset=seed % 1000)
        got = grads(simvae_fast.simvae_latent(mu, logvar, backend=backend, **kwargs), (mu, logvar), seed)
        expected = grads(simvae_fast.simvae_latent(mu, logvar, backend="reference", **kwargs), (mu, logvar), seed)
        assert_all_close(got, expected, dtype if noise == "eps" else torch.float32)

    check()


@pytest.mark.parametrize("backend", KERNELS)
def test_info_nce_matches_reference(backend):
    @budget(backend)
    @given(inputs=latent_inputs(backend, min_views=2), positives=st.sampled_from(reference.POSITIVES),
           normalize=st.booleans(), temperature=st.sampled_from([0.01, 0.07, 0.5, 2.0]),
           reduction=st.sampled_from(reference.REDUCTIONS))
    def check(inputs, positives, normalize, temperature, reduction):
        G, J, D, dtype, layout, seed = inputs
        z = make((G, J, D), dtype, layout, seed, scale=1.0 if normalize else 0.3).requires_grad_()
        tau = torch.tensor(temperature, dtype=dtype, requires_grad=True)
        kwargs = dict(temperature=tau, normalize=normalize, positives=positives, reduction=reduction)
        got = grads([simvae_fast.info_nce(z, backend=backend, **kwargs)], (z, tau), seed)
        expected = grads([reference.info_nce(z, tau, normalize, positives, reduction)], (z, tau), seed)
        norms = z.detach().double().norm(dim=2).flatten()
        largest, smallest = (float(norms.max()), float(norms.min())) if norms.numel() else (0.0, 1.0)
        logit = 1.0 / temperature if normalize else largest**2 / temperature  # largest |s_ik|
        row_scale = 1.0 / max(smallest, 1e-3) if normalize else largest
        # loss ~ logits; dz ~ (1/tau) sum_k G_ik u_k with G's error ~ logit; dtau ~ (1/tau) sum G s
        assert_all_close(got, expected, dtype, [logit, logit * row_scale / temperature, logit**2 / temperature])

    check()
