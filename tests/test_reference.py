"""The reference against independent computations, in float64: densities of the stacked Gaussian, numerical
integrals, torch.distributions, explicit loops, and the closed-form gradients of docs/math.md."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from simvae_fast import reference

SIGMA2 = 0.15


@pytest.fixture(autouse=True)
def float64_by_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def latents(G, J, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(G, J, D, generator=g)


# ---------------------------------------------------------------- grouped-view prior
@pytest.mark.parametrize("J, D", [(2, 1), (2, 3), (3, 4), (5, 2)])
def test_gaussian_prior_is_the_stacked_gaussian_density(J, D):
    """(z_1..z_J) ~ N(0, sigma2 I_JD + (1 1^T) kron I_D) when y ~ N(0, I) is integrated out."""
    z = latents(4, J, D)
    cov = SIGMA2 * torch.eye(J * D) + torch.kron(torch.ones(J, J), torch.eye(D))
    expected = MultivariateNormal(torch.zeros(J * D), covariance_matrix=cov).log_prob(z.reshape(4, J * D))
    torch.testing.assert_close(reference.grouped_prior_log_prob(z, SIGMA2, "gaussian"), expected)


def _integrate_over_y(z, log_p_y):
    """log of the integral over y of p(y) prod_j N(z_j | y, sigma2), for D = 1, by the trapezoid rule."""
    y = torch.linspace(-12, 12, 200001)
    log_lik = Normal(y, math.sqrt(SIGMA2)).log_prob(z[..., None]).sum(dim=0)
    return torch.log(torch.trapezoid(torch.exp(log_lik + log_p_y(y)), y))


@pytest.mark.parametrize("J", [2, 3, 5])
@pytest.mark.parametrize("prior, log_p_y", [("gaussian", lambda y: Normal(0.0, 1.0).log_prob(y)),
                                            ("flat", lambda y: torch.zeros_like(y))])
def test_prior_is_the_integral_over_the_content(J, prior, log_p_y):
    """Per dimension, the marginal is an integral over y; dimensions are independent, so their logs add."""
    z = latents(3, J, 2, seed=J)
    expected = torch.stack([sum(_integrate_over_y(z[g, :, d], log_p_y) for d in range(2)) for g in range(3)])
    torch.testing.assert_close(reference.grouped_prior_log_prob(z, SIGMA2, prior), expected, rtol=1e-7, atol=1e-7)


def test_official_prior_plugs_in_the_mean_view():
    """J = 2: S_w = |z1 - z2|^2 / 2, and y is the mean of the views."""
    z = latents(6, 2, 5)
    s_w = 0.5 * (z[:, 0] - z[:, 1]).square().sum(1)
    expected = -s_w / (2 * SIGMA2) - 0.5 * z.mean(1).square().sum(1)
    torch.testing.assert_close(reference.grouped_prior_log_prob(z, SIGMA2, "official"), expected)


@pytest.mark.parametrize("J", [1, 3])
def test_standard_prior_is_independent_unit_gaussians(J):
    z = latents(5, J, 7)
    expected = Normal(0.0, 1.0).log_prob(z).sum(dim=(1, 2))
    torch.testing.assert_close(reference.grouped_prior_log_prob(z, SIGMA2, "standard"), expected)


def closed_form_prior_grad(z, prior):
    """d log p / d z_j from the table of docs/math.md §2."""
    J = z.shape[1]
    z_bar = z.mean(1, keepdim=True)
    within = -(z - z_bar) / SIGMA2
    return {"gaussian": within - z_bar / ((1 + SIGMA2 / J) * J), "flat": within,
            "official": within - z_bar / J, "standard": -z}[prior]


@pytest.mark.parametrize("prior", reference.PRIORS)
@pytest.mark.parametrize("J", [2, 3])
def test_prior_gradient_matches_closed_form(prior, J):
    z = latents(4, J, 6).requires_grad_()
    reference.grouped_prior_log_prob(z, SIGMA2, prior).sum().backward()
    torch.testing.assert_close(z.grad, closed_form_prior_grad(z.detach(), prior))


# ---------------------------------------------------------------- reparameterisation and entropy
def test_reparameterize_and_entropy_match_torch_distributions():
    mu, logvar, eps = latents(3, 2, 4, 1), latents(3, 2, 4, 2), latents(3, 2, 4, 3)
    std = torch.exp(0.5 * logvar)
    torch.testing.assert_close(reference.reparameterize(mu, logvar, eps), mu + std * eps)
    torch.testing.assert_close(reference.gaussian_entropy(logvar), Normal(mu, std).entropy().sum(dim=(1, 2)))


def test_latent_block_gradients_match_closed_form():
    """dmu = dz_total, dlogvar = dz_total * eps * exp(logvar/2) / 2 + b/2 (docs/math.md §3)."""
    mu, logvar, eps = (latents(4, 3, 5, s).requires_grad_() for s in (1, 2, 3))
    eps = eps.detach()
    dz, a, b = latents(4, 3, 5, 4), torch.randn(4), torch.randn(4)
    z = reference.reparameterize(mu, logvar, eps)
    log_p = reference.grouped_prior_log_prob(z, SIGMA2, "gaussian")
    h = reference.gaussian_entropy(logvar)
    torch.autograd.backward([z, log_p, h], [dz, a, b])
    dz_total = dz + a[:, None, None] * closed_form_prior_grad(z.detach(), "gaussian")
    torch.testing.assert_close(mu.grad, dz_total)
    expected = dz_total * eps * 0.5 * torch.exp(0.5 * logvar.detach()) + 0.5 * b[:, None, None]
    torch.testing.assert_close(logvar.grad, expected)


# ---------------------------------------------------------------- InfoNCE
def info_nce_loop(z, tau, normalize, positives):
    """Row losses by an explicit double loop over plain Python floats."""
    G, J, D = z.shape
    rows = [z[g, j].tolist() for g in range(G) for j in range(J)]
    if normalize:
        rows = [[x / max(math.sqrt(sum(v * v for v in r)), 1e-12) for x in r] for r in rows]
    N = len(rows)
    losses = []
    for i in range(N):
        s = [sum(a * b for a, b in zip(rows[i], rows[k])) / tau for k in range(N)]
        others = [s[k] for k in range(N) if k != i]
        pos = [s[k] for k in range(N) if k != i and k // J == i // J]
        lse = lambda xs: max(xs) + math.log(sum(math.exp(x - max(xs)) for x in xs))  # noqa: E731
        losses.append(lse(others) - (sum(pos) / len(pos) if positives == "mean" else lse(pos)))
    return torch.tensor(losses)


@pytest.mark.parametrize("G, J, D", [(1, 2, 3), (3, 3, 5), (4, 2, 1), (2, 4, 7)])
@pytest.mark.parametrize("positives", reference.POSITIVES)
@pytest.mark.parametrize("normalize, tau", [(True, 0.1), (True, 0.5), (False, 2.0)])
def test_info_nce_matches_explicit_loop(G, J, D, positives, normalize, tau):
    z = latents(G, J, D, seed=G * 100 + J * 10 + D)
    expected = info_nce_loop(z, tau, normalize, positives)
    got = reference.info_nce(z, tau, normalize, positives, reduction="none")
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(reference.info_nce(z, tau, normalize, positives, "sum"), expected.sum())
    torch.testing.assert_close(reference.info_nce(z, tau, normalize, positives, "mean"), expected.mean())


@pytest.mark.parametrize("positives", reference.POSITIVES)
def test_info_nce_with_two_views_is_simclr_nt_xent(positives):
    """SimCLR: 2B rows [out0; out1], cross-entropy of each row against its partner, self excluded."""
    z = latents(6, 2, 8)
    out = torch.nn.functional.normalize(torch.cat([z[:, 0], z[:, 1]]), dim=1)
    B = 6
    logits = out @ out.T / 0.5
    logits.fill_diagonal_(-math.inf)
    partner = torch.cat([torch.arange(B, 2 * B), torch.arange(B)])
    expected = torch.nn.functional.cross_entropy(logits, partner)
    torch.testing.assert_close(reference.info_nce(z, 0.5, True, positives), expected)


@pytest.mark.parametrize("positives", reference.POSITIVES)
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_gradients_match_closed_form(positives, normalize):
    """du_i = (1/tau) sum_k (G_ik + G_ki) u_k, dz = (I - u u^T) du / |z| when normalising, dtau = -(1/tau) sum G s."""
    G, J, D = 3, 3, 4
    z = latents(G, J, D, 7).requires_grad_()
    tau = torch.tensor(0.3, requires_grad=True)
    reference.info_nce(z, tau, normalize, positives).backward()

    rows = z.detach().reshape(G * J, D)
    u = torch.nn.functional.normalize(rows, dim=1) if normalize else rows
    s = u @ u.T / tau.detach()
    eye = torch.eye(G * J, dtype=torch.bool)
    same = (torch.arange(G * J)[:, None] // J == torch.arange(G * J)[None, :] // J) & ~eye
    P = torch.softmax(s.masked_fill(eye, -math.inf), dim=1)
    W = same / (J - 1) if positives == "mean" else torch.softmax(s.masked_fill(~same, -math.inf), dim=1)
    Gm = (P - W) / (G * J)
    du = (Gm + Gm.T) @ u / tau.detach()
    if normalize:
        norms = rows.norm(dim=1, keepdim=True)
        du = (du - (du * u).sum(1, keepdim=True) * u) / norms
    torch.testing.assert_close(z.grad, du.reshape(G, J, D))
    torch.testing.assert_close(tau.grad, -(Gm * s).sum() / tau.detach())


# ---------------------------------------------------------------- counter-based noise
def test_philox_randn_equals_tritons_randn():
    """Uniforms bit for bit, normals to 1e-6, across the 2**32 counter boundary (int64 offsets)."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def draw(normal_ptr, uniform_ptr, seed, offset, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        counter = offset + i.to(tl.int64)
        tl.store(normal_ptr + i, tl.randn(seed, counter), mask=i < n)
        tl.store(uniform_ptr + i, tl.rand(seed, counter), mask=i < n)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for seed, offset in [(0, 0), (1234, 17), (2**40 + 5, 2**32 - 100)]:
        normal = torch.empty(257, dtype=torch.float32, device=device)
        uniform = torch.empty_like(normal)
        draw[(1,)](normal, uniform, seed, offset, 257, BLOCK=512)
        x0, _, _, _ = reference.philox4x32(seed, offset + torch.arange(257, device=device))
        assert torch.equal(uniform, reference.uint32_to_uniform(x0))
        torch.testing.assert_close(normal, reference.philox_randn(seed, offset, (257,), device=device),
                                   rtol=0, atol=1e-6)


def test_philox_randn_moments():
    n = reference.philox_randn(42, 0, (200_000,)).double()
    assert abs(n.mean()) < 0.01 and abs(n.var() - 1) < 0.01
    assert abs(torch.corrcoef(torch.stack([n[:-1], n[1:]]))[0, 1]) < 0.01


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: reference.grouped_prior_log_prob(torch.randn(4, 3)), "z: expected a 3-D tensor"),
    (lambda: reference.grouped_prior_log_prob(torch.ones(2, 2, 2, dtype=torch.int64)), "z: expected a floating"),
    (lambda: reference.grouped_prior_log_prob(torch.randn(2, 1, 3), prior="gaussian"), "needs J >= 2"),
    (lambda: reference.grouped_prior_log_prob(torch.randn(2, 2, 3), sigma2=0.0), "sigma2: expected a positive"),
    (lambda: reference.grouped_prior_log_prob(torch.randn(2, 2, 3), prior="laplace"), "prior: expected one of"),
    (lambda: reference.reparameterize(torch.randn(2, 2, 3), torch.randn(2, 2, 4), torch.randn(2, 2, 3)),
     "logvar: expected the same shape as mu"),
    (lambda: reference.reparameterize(torch.randn(2, 2, 3), torch.randn(2, 2, 3), torch.randn(2, 2, 3).float()),
     "eps: expected the same dtype as mu"),
    (lambda: reference.info_nce(torch.randn(2, 2, 3), temperature=-1.0), "temperature: expected a positive"),
    (lambda: reference.info_nce(torch.randn(2, 2, 3), temperature=torch.tensor(0.0)), "temperature: expected a pos"),
    (lambda: reference.info_nce(torch.randn(4, 1, 3)), "z: expected J >= 2"),
    (lambda: reference.info_nce(torch.randn(4, 2, 3), positives="max"), "positives: expected one of"),
    (lambda: reference.info_nce(torch.randn(4, 2, 3), reduction="avg"), "reduction: expected one of"),
    (lambda: reference.gaussian_entropy([1.0]), "logvar: expected a torch.Tensor"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
