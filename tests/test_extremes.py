"""Numerical extremes and the NaN/Inf policy of the public ops, on every backend usable here."""
import math

import pytest
import torch

import simvae_fast
from simvae_fast import reference
from simvae_fast.backends import backends

KERNELS = [b for b in ("cpu", "triton") if backends()[b].usable]


def latent_outputs_and_grads(backend, mu, logvar, **kwargs):
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    out = simvae_fast.simvae_latent(mu, logvar, backend=backend, **kwargs)
    torch.autograd.backward(list(out), [torch.ones_like(o) for o in out])
    return [o.detach().double() for o in out] + [mu.grad.double(), logvar.grad.double()]


def assert_matches_where_reference_is_finite(got, expected, rtol):
    for g, e in zip(got, expected):
        finite = torch.isfinite(e)
        assert torch.isfinite(g[finite]).all(), "a kernel output is not finite where the reference is"
        torch.testing.assert_close(g[finite], e[finite], rtol=rtol, atol=rtol * float(e[finite].abs().max()))


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("level", [-30.0, 30.0, "mixed"])
@pytest.mark.parametrize("prior", reference.PRIORS)
def test_logvar_at_plus_minus_30(backend, level, prior):
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(5, 3, 7, generator=g)
    logvar = torch.full_like(mu, level) if level != "mixed" else torch.where(torch.rand(5, 3, 7, generator=g) < .5,
                                                                              -30.0, 30.0)
    got = latent_outputs_and_grads(backend, mu, logvar, prior=prior, seed=11)
    expected = latent_outputs_and_grads("reference", mu.double(), logvar.double(), prior=prior, seed=11)
    assert all(torch.isfinite(e).all() for e in expected)
    assert_matches_where_reference_is_finite(got, expected, rtol=1e-4)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("shape", [(4, 3, 1), (1, 2, 1), (3, 1, 1)])
def test_one_dimension_and_identical_views(backend, shape):
    """D = 1, and all views of a group identical (S_w = 0: the prior is its normalising constants)."""
    G, J, D = shape
    mu = torch.randn(G, 1, D, dtype=torch.float64).expand(G, J, D)
    logvar = torch.randn(G, 1, D, dtype=torch.float64).expand(G, J, D)
    eps = torch.randn(G, 1, D, dtype=torch.float64).expand(G, J, D)
    for prior in reference.PRIORS if J > 1 else ("standard",):
        got = latent_outputs_and_grads(backend, mu, logvar, prior=prior, eps=eps)
        expected = latent_outputs_and_grads("reference", mu, logvar, prior=prior, eps=eps)
        assert_matches_where_reference_is_finite(got, expected, rtol=1e-9)


def info_nce_loss_and_grad(backend, z, **kwargs):
    z = z.clone().requires_grad_()
    loss = simvae_fast.info_nce(z, backend=backend, reduction="none", **kwargs)
    loss.sum().backward()
    return loss.detach().double(), z.grad.double()


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("positives", reference.POSITIVES)
def test_info_nce_temperature_001_unnormalised_norms_of_100(backend, positives):
    """Logits up to |z|^2 / tau = 1e6: finite only with a running max. In float64 the kernels match the
    reference tightly; in float32 a logit of 1e6 carries an absolute rounding error of about 0.06, which no
    algorithm avoids, so there they must be as accurate as PyTorch's own float32 computation (within 4x)."""
    g = torch.Generator().manual_seed(5)
    z = torch.nn.functional.normalize(torch.randn(6, 3, 9, generator=g, dtype=torch.float64), dim=-1) * 100
    kwargs = dict(temperature=0.01, normalize=False, positives=positives)
    truth = info_nce_loss_and_grad("reference", z, **kwargs)
    for got, want in zip(info_nce_loss_and_grad(backend, z, **kwargs), truth):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9 * float(want.abs().max()) + 1e-6)
    (loss32, grad32), (ref_loss32, ref_grad32) = (info_nce_loss_and_grad(b, z.float(), **kwargs)
                                                  for b in (backend, "reference"))
    assert torch.isfinite(loss32).all() and torch.isfinite(grad32).all()
    assert (loss32 - truth[0]).abs().max() <= 4 * (ref_loss32 - truth[0]).abs().max() + 1e-3
    grad_error = (grad32 - truth[1]).abs().max() / truth[1].abs().max()
    # Triton included: its backward recomputes each logit bit for bit as the forward did (kernels/info_nce.py),
    # so exp(s - lse) carries no ulp-of-1e6 mismatch (it was allowed 2**-23 * 1e6 = 0.12 before; now ~9e-8).
    assert grad_error <= 4 * (ref_grad32 - truth[1]).abs().max() / truth[1].abs().max() + 1e-6


@pytest.mark.parametrize("backend", ["reference", *KERNELS])
def test_identical_views_info_nce_closed_form(backend):
    """Identical rows everywhere: every logit is 1/tau, so L = log(N - 1) ("mean") and dz = 0."""
    z = torch.ones(4, 3, 5, dtype=torch.float64, requires_grad=True)
    loss = simvae_fast.info_nce(z, temperature=0.1, backend=backend)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(math.log(11), dtype=torch.float64))
    torch.testing.assert_close(z.grad, torch.zeros_like(z), atol=1e-9, rtol=0)


@pytest.mark.parametrize("backend", ["reference", *KERNELS])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_latent_non_finite_input_stays_in_its_group(backend, bad):
    mu, logvar = torch.randn(4, 2, 6), torch.randn(4, 2, 6)
    mu[1, 0, 2] = bad
    z, log_prior, entropy = simvae_fast.simvae_latent(mu, logvar, seed=1, backend=backend)
    assert not torch.isfinite(z[1, 0, 2]) and not torch.isfinite(log_prior[1])
    others = [0, 2, 3]
    assert torch.isfinite(log_prior[others]).all() and torch.isfinite(entropy).all()
    assert torch.isfinite(z[others]).all() and torch.isfinite(z[1, 1]).all()
    logvar[2, 1, 0] = bad
    _, _, entropy = simvae_fast.simvae_latent(mu, logvar, seed=1, backend=backend)
    assert not torch.isfinite(entropy[2]) and torch.isfinite(entropy[[0, 1, 3]]).all()


@pytest.mark.parametrize("backend", ["reference", *KERNELS])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_info_nce_non_finite_input_gives_nan_loss(backend, bad):
    z = torch.randn(4, 2, 8)
    z[2, 1, 0] = bad
    z.requires_grad_()
    loss = simvae_fast.info_nce(z, backend=backend)
    loss.backward()
    assert torch.isnan(loss) and not torch.isfinite(z.grad).all()


@pytest.mark.parametrize("backend", KERNELS)
def test_more_than_2_to_the_31_elements_is_refused(backend):
    """The guard runs before any copy: an expanded (stride-0) tensor of 2**32 elements allocates nothing."""
    huge = torch.zeros(1, 1, 1).expand(2**16, 2, 2**15)
    with pytest.raises(ValueError, match=r"mu: expected at most 2147483647 \(2\*\*31 - 1\) elements .* got 4294967296"):
        simvae_fast.simvae_latent(huge, huge, eps=huge, backend=backend)
    with pytest.raises(ValueError, match=r"z: expected at most 2147483647 .* got 4294967296"):
        simvae_fast.info_nce(huge, backend=backend)
