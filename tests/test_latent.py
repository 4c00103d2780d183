"""Tests of the fused latent op (simvae_latent): every usable backend against simvae_fast.reference.

Backends here: "cpu" (C++ extension) and "triton" (CPU interpreter, reduced shapes). GPU tests carry
@pytest.mark.gpu. Outputs are poisoned: torch's deterministic mode fills every torch.empty (in Python and
in the C++ extension) with NaN, so a kernel that skips an element leaves a NaN that check_written finds.
"""
import math

import pytest
import torch

from simvae_fast import reference, simvae_latent
from simvae_fast.backends import backends

PRIORS = reference.PRIORS
KERNEL_BACKENDS = [name for name in ("cpu", "triton") if backends()[name].usable]
# Relative tolerances (of the largest magnitude) per input dtype, for outputs and gradients.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
# With the noise made from a seed, float64 inputs: the kernels' fp32 normals against reference.philox_randn's (torch's
# fp32 log and cos): agreement to fp32 rounding of ε.
SEEDED_TOLERANCE = 2e-6


pytestmark = pytest.mark.usefixtures("poison_empty_tensors")  # tests/conftest.py


def check_written(*tensors):
    """Inputs are finite, so a NaN in an output is a poisoned element the kernel never wrote."""
    for t in tensors:
        assert not torch.isnan(t).any(), f"{t.isnan().sum().item()} of {t.numel()} elements not written"


def latents(G, J, D, dtype, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(G, J, D, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    logvar = (0.5 * torch.randn(G, J, D, generator=gen, dtype=torch.float64) - 1.0).to(dtype=dtype, device=device)
    eps = torch.randn(G, J, D, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    return mu, logvar, eps


def forward_backward(backend, mu, logvar, upstream, **kwargs):
    """Outputs and (grad mu, grad logvar) for upstream gradients (dz, a, b) on (z, log_prior, entropy)."""
    mu = mu.detach().requires_grad_()
    logvar = logvar.detach().requires_grad_()
    out = simvae_latent(mu, logvar, backend=backend, **kwargs)
    grad_z, grad_log_prior, grad_entropy = upstream
    loss = (out.z * grad_z).sum() + (out.log_prior * grad_log_prior).sum() + (out.entropy * grad_entropy).sum()
    grads = torch.autograd.grad(loss, (mu, logvar))
    return [t.detach() for t in out] + list(grads)


def random_upstream(mu, seed=1):
    gen = torch.Generator().manual_seed(seed)
    G = mu.shape[0]
    acc = torch.float64 if mu.dtype == torch.float64 else torch.float32
    grad_z = torch.randn(mu.shape, generator=gen, dtype=torch.float64).to(dtype=mu.dtype, device=mu.device)
    grad_log_prior = torch.randn(G, generator=gen, dtype=torch.float64).to(dtype=acc, device=mu.device)
    grad_entropy = torch.randn(G, generator=gen, dtype=torch.float64).to(dtype=acc, device=mu.device)
    return grad_z, grad_log_prior, grad_entropy


def assert_close_scaled(actual, expected, rtol, name):
    """|actual − expected| ≤ rtol · max(1, max |expected|), elementwise, in float64."""
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert actual.shape == expected.shape, name
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    error = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert error <= rtol * scale, f"{name}: max error {error:.3g} > {rtol:.1g} x {scale:.3g}"


NAMES = ("z", "log_prior", "entropy", "grad_mu", "grad_logvar")


def compare_with_reference(backend, mu, logvar, rtol, **kwargs):
    upstream = random_upstream(mu)
    actual = forward_backward(backend, mu, logvar, upstream, **kwargs)
    expected = forward_backward("reference", mu, logvar, upstream, **kwargs)
    check_written(*actual)
    for name, a, e in zip(NAMES, actual, expected):
        assert a.dtype == e.dtype, name
        assert_close_scaled(a, e, rtol, name)


def prior_views_cases(views_choices):
    return [(p, j) for p in PRIORS for j in views_choices if j >= 2 or p == "standard"]


# --- CPU backend: the full grid ---
@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prior,J", prior_views_cases((1, 2, 3, 5)))
@pytest.mark.parametrize("D", [1, 3, 10, 64, 130])
def test_cpu_matches_reference(dtype, prior, J, D):
    for G in (1, 7, 33):
        mu, logvar, eps = latents(G, J, D, dtype, seed=G * 1000 + J * 100 + D)
        compare_with_reference("cpu", mu, logvar, TOLERANCE[dtype], eps=eps, prior=prior, sigma2=0.3)


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("prior,J", prior_views_cases((1, 2, 5)))
@pytest.mark.parametrize("D", [3, 130])
def test_cpu_seeded_matches_reference(prior, J, D):
    # The reference draws ε with reference.philox_randn (torch's fp32 log/cos): agreement to fp32 rounding.
    mu, logvar, _ = latents(7, J, D, torch.float64, seed=J + D)
    compare_with_reference("cpu", mu, logvar, SEEDED_TOLERANCE, seed=2**40 + 17, offset=2**32 - 300, prior=prior)


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_cpu_many_blocks_matches_reference(threads, noise):
    # G = 257 groups of J·D = 260 elements are three blocks of 126, 126 and 5 groups (about 32k elements each),
    # handed out to the threads one at a time: every group computed once, whichever thread takes it.
    mu, logvar, eps = latents(257, 2, 130, torch.float64, seed=257 + threads)
    kwargs = {"eps": eps} if noise == "eps" else {"seed": 5, "offset": 2**32 - 3000}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        compare_with_reference("cpu", mu, logvar, TOLERANCE[torch.float64] if noise == "eps" else SEEDED_TOLERANCE, **kwargs)
    finally:
        torch.set_num_threads(before)


# --- Triton under the interpreter: a reduced grid that still covers every prior, tail masks and J padding ---
TRITON_SHAPES = [(3, 2, 10), (2, 3, 130), (7, 5, 3), (1, 2, 1)]


@pytest.mark.skipif("triton" not in KERNEL_BACKENDS, reason="triton not usable")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_triton_matches_reference(dtype, prior, noise):
    shapes = TRITON_SHAPES + ([(2, 1, 64)] if prior == "standard" else [])
    for G, J, D in shapes:
        mu, logvar, eps = latents(G, J, D, dtype, seed=G + J + D)
        if noise == "eps":
            compare_with_reference("triton", mu, logvar, TOLERANCE[dtype], eps=eps, prior=prior)
        else:
            compare_with_reference("triton", mu, logvar, SEEDED_TOLERANCE, seed=99, offset=2**31 - 40, prior=prior)


# --- Half precision: per-dtype tolerances against the reference on the same (rounded) inputs ---
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prior", ["gaussian", "standard"])
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_half_precision(backend, dtype, prior, noise):
    mu, logvar, eps = latents(5, 3, 130 if backend == "cpu" else 33, dtype)
    kwargs = {"eps": eps} if noise == "eps" else {"seed": 5, "offset": 11}
    compare_with_reference(backend, mu, logvar, TOLERANCE[dtype], prior=prior, **kwargs)


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
def test_backward_bf16_beats_saved_z():
    """The backward regenerates std·ε in fp32; recovering it as z − μ from a bf16 z would be far worse."""
    G, J, D = 64, 2, 64
    mu, _, _ = latents(G, J, D, torch.bfloat16)
    logvar = torch.full((G, J, D), math.log(0.01), dtype=torch.bfloat16)  # std 0.1, |μ| ~ 1
    grad_z, _, _ = random_upstream(mu)
    zeros = torch.zeros(G)
    _, _, _, _, grad_logvar = forward_backward("cpu", mu, logvar, (grad_z, zeros, zeros), seed=4)
    std_eps = reference.philox_randn(4, 0, (G, J, D)).double() * logvar.double().mul(0.5).exp()
    exact = 0.5 * grad_z.double() * std_eps  # a = b = 0: dlogvar = ½·dz·std·ε
    z_bf16 = (mu.double() + std_eps).to(torch.bfloat16)
    from_saved_z = 0.5 * grad_z.double() * (z_bf16.double() - mu.double())
    kernel_error = (grad_logvar.double() - exact).abs().max().item()
    saved_z_error = (from_saved_z - exact).abs().max().item()
    assert kernel_error < saved_z_error / 4, (kernel_error, saved_z_error)


def backward_ops():
    ops = []
    if "cpu" in KERNEL_BACKENDS:
        ops.append(("cpu", torch.ops.simvae_fast.latent_forward, torch.ops.simvae_fast.latent_backward))
    if "triton" in KERNEL_BACKENDS:
        import simvae_fast.ops.latent as latent_ops

        ops.append(("triton", latent_ops.latent_triton_forward, latent_ops.latent_triton_backward))
    return ops


@pytest.mark.parametrize("backend,forward_op,backward_op", backward_ops(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_backward_op_takes_std_eps_from_saved_z(backend, forward_op, backward_op, dtype, noise):
    """Given z, the backward op uses z and z − μ (moving z moves the gradients as the formula says); without
    z it recomputes them, and both agree with the reference."""
    G, J, D = (3, 3, 130) if backend == "cpu" else (2, 3, 10)
    mu, logvar, eps = latents(G, J, D, dtype, seed=D)
    eps = eps if noise == "eps" else None
    call = (11, 2**32 - 5, 0.3, "gaussian")
    z, _, _ = forward_op(mu, logvar, eps, *call)
    upstream = random_upstream(mu)
    reference_noise = {"eps": eps} if noise == "eps" else {"seed": 11, "offset": 2**32 - 5}
    expected = forward_backward("reference", mu, logvar, upstream, prior="gaussian", sigma2=0.3, **reference_noise)
    rtol = TOLERANCE[dtype] if noise == "eps" or dtype == torch.float32 else SEEDED_TOLERANCE
    for saved in (z, None):
        grads = backward_op(*upstream, mu, logvar, eps, saved, *call)
        check_written(*grads)
        for name, actual, e in zip(("grad_mu", "grad_logvar"), grads, expected[3:]):
            assert_close_scaled(actual, e, rtol, name)
    # A z moved by 1 on view 0: dlogvar = ½·dμ·(z − μ) + ½b must follow the given z, and z̄ moves dμ.
    moved = z.clone()
    moved[:, 0] += 1.0
    half_b = 0.5 * upstream[2].to(dtype)[:, None, None]
    grad_mu, grad_logvar = backward_op(*upstream, mu, logvar, eps, z, *call)
    moved_mu, moved_logvar = backward_op(*upstream, mu, logvar, eps, moved, *call)
    assert_close_scaled(moved_logvar, 0.5 * moved_mu * (moved - mu) + half_b, TOLERANCE[dtype], "moved grad_logvar")
    assert (moved_mu - grad_mu).abs().min() > 1e-3 and (moved_logvar - grad_logvar).abs().max() > 1e-2


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_z_saved_only_when_backward_uses_it(backend, dtype):
    """float32/float64 save the output z (modifying it in place then breaks backward, as for any saved
    tensor); float16/bfloat16 do not save it."""
    mu, logvar, _ = latents(2, 2, 3, dtype)
    mu.requires_grad_()
    out = simvae_latent(mu, logvar, seed=1, backend=backend)
    out.z.add_(1.0)
    loss = out.z.sum() + out.log_prior.sum()
    if dtype == torch.bfloat16:
        loss.backward()
        check_written(mu.grad)
    else:
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
def test_bad_z_to_the_raw_backward_op():
    mu, logvar, _ = latents(3, 2, 4, torch.float32)
    upstream = random_upstream(mu)
    op = torch.ops.simvae_fast.latent_backward
    with pytest.raises(RuntimeError, match="z: expected shape"):
        op(*upstream, mu, logvar, None, mu[:, :, :2], 0, 0, 0.15, "gaussian")
    with pytest.raises(RuntimeError, match="z: expected dtype"):
        op(*upstream, mu, logvar, None, mu.double(), 0, 0, 0.15, "gaussian")


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("prior,J", [("gaussian", 3), ("flat", 2), ("official", 2), ("standard", 1)])
def test_gradcheck_cpu(prior, J):
    mu, logvar, eps = latents(3, J, 5, torch.float64)
    mu.requires_grad_()
    logvar.requires_grad_()

    def f(mu, logvar):
        return tuple(simvae_latent(mu, logvar, eps=eps, prior=prior, sigma2=0.4, backend="cpu"))

    assert torch.autograd.gradcheck(f, (mu, logvar))


# --- Noise: same function as Triton's tl.randn ---
def triton_noise(seed, offsets):
    """(tl.rand, tl.randn) of Triton at int64 offsets, through a one-program kernel (interpreter)."""
    import triton
    import triton.language as tl

    @triton.jit
    def draw(offsets_ptr, uniform_ptr, normal_ptr, seed, N: tl.constexpr):
        i = tl.arange(0, N)
        offsets = tl.load(offsets_ptr + i)
        tl.store(uniform_ptr + i, tl.rand(seed, offsets))
        tl.store(normal_ptr + i, tl.randn(seed, offsets))

    uniform = torch.empty(offsets.numel(), dtype=torch.float32)
    normal = torch.empty(offsets.numel(), dtype=torch.float32)
    draw[(1,)](offsets, uniform, normal, seed, N=offsets.numel())
    return uniform, normal


@pytest.mark.skipif("triton" not in KERNEL_BACKENDS, reason="triton not usable")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("seed,start", [(0, 0), (2**40 + 3, 2**31 - 128), (123456789, 2**32 - 100)])
def test_noise_equals_triton_randn(backend, seed, start):
    """z with mu = 0, logvar = 0 is ε: equal to tl.randn(seed, offset + i) and to reference.philox_randn."""
    G, J, D = 4, 2, 32
    offsets = start + torch.arange(G * J * D, dtype=torch.int64)
    uniform, normal = triton_noise(seed, offsets)
    x0, _, _, _ = reference.philox4x32(seed, offsets)
    assert torch.equal(uniform, reference.uint32_to_uniform(x0)), "Triton's uniforms are the reference's, bit for bit"
    zeros = torch.zeros(G, J, D)
    eps = simvae_latent(zeros, zeros, seed=seed, offset=start, backend=backend).z.flatten()
    check_written(eps)
    torch.testing.assert_close(eps, normal, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(eps, reference.philox_randn(seed, start, (G * J * D,)), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
def test_noise_counters_cross_two_to_the_32():
    """Counters ≥ 2**32 carry into Philox counter word 1: the draw across the boundary is the reference's."""
    G, J, D = 2, 2, 100
    zeros = torch.zeros(G, J, D)
    start = 2**32 - 150
    eps = simvae_latent(zeros, zeros, seed=77, offset=start, backend="cpu").z
    torch.testing.assert_close(eps, reference.philox_randn(77, start, (G, J, D)), rtol=1e-6, atol=1e-6)
    wrapped = reference.philox_randn(77, start - 2**32, (G, J, D))  # what a 32-bit counter would give
    assert (eps.flatten()[200:] - wrapped.flatten()[200:]).abs().max() > 1.0


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
def test_noise_moments():
    G, J, D = 512, 4, 512  # n ≈ 1M normals
    zeros = torch.zeros(G, J, D)
    eps = simvae_latent(zeros, zeros, seed=2024, backend="cpu").z.double().flatten()
    n = eps.numel()
    assert abs(eps.mean().item()) < 5 / math.sqrt(n)
    assert abs(eps.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(((eps**4).mean() / eps.var() ** 2).item() - 3) < 5 * math.sqrt(24 / n)
    neighbour = torch.corrcoef(torch.stack([eps[:-1], eps[1:]]))[0, 1].item()
    assert abs(neighbour) < 5 / math.sqrt(n)
    other_seed = simvae_latent(zeros, zeros, seed=2025, backend="cpu").z.double().flatten()
    assert abs(torch.corrcoef(torch.stack([eps, other_seed]))[0, 1].item()) < 5 / math.sqrt(n)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_seed_none_follows_torch_manual_seed(backend):
    mu, logvar, _ = latents(2, 2, 8, torch.float32)
    torch.manual_seed(3)
    first = simvae_latent(mu, logvar, backend=backend).z
    torch.manual_seed(3)
    assert torch.equal(first, simvae_latent(mu, logvar, backend=backend).z)


# --- Bad input: a clear error naming the argument ---
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_bad_input(backend):
    mu, logvar, eps = latents(3, 2, 4, torch.float32)
    with pytest.raises(ValueError, match="logvar: expected the same shape"):
        simvae_latent(mu, logvar[:, :, :3], eps=eps, backend=backend)
    with pytest.raises(ValueError, match="eps: expected the same dtype"):
        simvae_latent(mu, logvar, eps=eps.double(), backend=backend)
    with pytest.raises(ValueError, match="logvar: expected the same device"):
        simvae_latent(mu, logvar.to("meta"), backend=backend)
    with pytest.raises(ValueError, match="mu: expected a 3-D tensor"):
        simvae_latent(mu[0], logvar[0], backend=backend)
    with pytest.raises(ValueError, match="prior: 'gaussian' couples the views"):
        simvae_latent(mu[:, :1], logvar[:, :1], prior="gaussian", backend=backend)
    with pytest.raises(ValueError, match="sigma2: expected a positive"):
        simvae_latent(mu, logvar, sigma2=0.0, backend=backend)
    with pytest.raises(ValueError, match="sigma2: expected a positive"):
        simvae_latent(mu, logvar, sigma2=-1.0, backend=backend)
    with pytest.raises(ValueError, match="prior: expected one of"):
        simvae_latent(mu, logvar, prior="laplace", backend=backend)
    with pytest.raises(ValueError, match="seed: expected an int"):
        simvae_latent(mu, logvar, seed=-1, backend=backend)


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
def test_bad_input_to_the_raw_op():
    """The extension's op checks its own arguments when called directly."""
    mu, logvar, _ = latents(3, 2, 4, torch.float32)
    op = torch.ops.simvae_fast.latent_forward
    with pytest.raises(RuntimeError, match="logvar: expected shape"):
        op(mu, logvar[:, :, :2], None, 0, 0, 0.15, "gaussian")
    with pytest.raises(RuntimeError, match="prior: expected"):
        op(mu, logvar, None, 0, 0, 0.15, "laplace")
    with pytest.raises(RuntimeError, match="sigma2: expected a positive"):
        op(mu, logvar, None, 0, 0, 0.0, "gaussian")
    with pytest.raises(RuntimeError, match="prior: a grouped prior needs J >= 2"):
        op(mu[:, :1], logvar[:, :1], None, 0, 0, 0.15, "flat")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_inputs(backend):
    mu, logvar, eps = latents(4, 10, 3, torch.float32)
    mu_t, logvar_t, eps_t = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (mu, logvar, eps))
    assert not mu_t.is_contiguous()
    mu_s = torch.randn(4, 3, 20)[:, :, ::2]  # strided last dim
    for kwargs in ({"eps": eps_t}, {"seed": 8}):
        expected = forward_backward("reference", mu, logvar, random_upstream(mu), **kwargs)
        actual = forward_backward(backend, mu_t, logvar_t, random_upstream(mu), **kwargs)
        for name, a, e in zip(NAMES, actual, expected):
            assert_close_scaled(a, e, 2e-6, name)
    strided = simvae_latent(mu_s, mu_s, seed=1, backend=backend)
    torch.testing.assert_close(strided.z, simvae_latent(mu_s.contiguous(), mu_s.contiguous(), seed=1, backend=backend).z)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_empty_groups(backend, noise):
    mu, logvar, eps = latents(0, 2, 5, torch.float32)
    kwargs = {"eps": eps} if noise == "eps" else {"seed": 1}
    z, log_prior, entropy, grad_mu, grad_logvar = forward_backward(backend, mu, logvar, random_upstream(mu), **kwargs)
    assert z.shape == (0, 2, 5) and log_prior.shape == (0,) and entropy.shape == (0,)
    assert grad_mu.shape == (0, 2, 5) and grad_logvar.shape == (0, 2, 5)


# --- Custom-op registrations and torch.compile ---
def op_samples(dtype=torch.float64):
    mu, logvar, eps = latents(3, 2, 5, dtype)
    mu.requires_grad_()
    logvar.requires_grad_()
    return [
        (mu, logvar, eps, 0, 0, 0.2, "gaussian"),
        (mu, logvar, None, 12, 2**32 - 3, 0.2, "official"),
        (mu[:, :1], logvar[:, :1], None, 5, 0, 0.2, "standard"),
    ]


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
def test_opcheck_extension_op():
    for args in op_samples():
        torch.library.opcheck(torch.ops.simvae_fast.latent_forward.default, args)


@pytest.mark.skipif("triton" not in KERNEL_BACKENDS, reason="triton not usable")
def test_opcheck_triton_op():
    for args in op_samples()[:2]:
        torch.library.opcheck(torch.ops.simvae_fast.latent_triton_forward.default, args)


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_torch_compile_fullgraph(noise):
    """The natural call compiles without graph breaks: validation traces, the op stays opaque."""
    torch._dynamo.reset()
    mu, logvar, eps = latents(5, 2, 7, torch.float32)
    if noise == "seed":
        compiled = torch.compile(fullgraph=True)(lambda mu, lv: simvae_latent(mu, lv, seed=3, backend="cpu"))
        eager = lambda mu, lv: simvae_latent(mu, lv, seed=3, backend="cpu")  # noqa: E731
    else:
        compiled = torch.compile(fullgraph=True)(lambda mu, lv, e: simvae_latent(mu, lv, eps=e, backend="cpu"))
        eager = lambda mu, lv: simvae_latent(mu, lv, eps=eps, backend="cpu")  # noqa: E731
    args = (eps,) if noise == "eps" else ()
    mu_c, lv_c = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    mu_e, lv_e = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    out_c, out_e = compiled(mu_c, lv_c, *args), eager(mu_e, lv_e)
    for a, e in zip(out_c, out_e):
        torch.testing.assert_close(a, e)
    sum(t.sum() for t in out_c).backward()
    sum(t.sum() for t in out_e).backward()
    torch.testing.assert_close(mu_c.grad, mu_e.grad)
    torch.testing.assert_close(lv_c.grad, lv_e.grad)


# --- GPU (run by the GPU check script) ---
GPU_BACKENDS = ["cuda", "triton"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("prior,J", prior_views_cases((1, 2, 5)))
@pytest.mark.parametrize("noise", ["eps", "seed"])
def test_gpu_matches_reference(backend, dtype, prior, J, noise):
    for G, D in ((1, 1), (33, 130), (7, 1000)):
        mu, logvar, eps = latents(G, J, D, dtype, device="cuda", seed=G + J + D)
        rtol = TOLERANCE[dtype] if noise == "eps" or dtype not in (torch.float64, torch.float32) else 1e-5
        kwargs = {"eps": eps} if noise == "eps" else {"seed": 2**33 + 1, "offset": 2**32 - 7}
        compare_with_reference(backend, mu, logvar, rtol, prior=prior, **kwargs)


@pytest.mark.gpu
def test_gpu_same_seed_same_z_everywhere():
    mu, logvar, _ = latents(64, 4, 129, torch.float32)
    cpu = simvae_latent(mu, logvar, seed=31, offset=2**32 - 1000, backend="cpu").z
    # Triton's GPU log/cos may be approximate instructions: a looser bound than CUDA's precise logf/cosf.
    for backend, tolerance in (("cuda", 2e-6), ("triton", 2e-5)):
        gpu = simvae_latent(mu.cuda(), logvar.cuda(), seed=31, offset=2**32 - 1000, backend=backend).z
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_opcheck_and_empty(backend):
    samples = [tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args) for args in op_samples()]
    op = torch.ops.simvae_fast.latent_forward if backend == "cuda" else torch.ops.simvae_fast.latent_triton_forward
    for args in samples:
        torch.library.opcheck(op.default, args)
    mu = torch.zeros(0, 2, 3, device="cuda")
    assert simvae_latent(mu, mu, seed=1, backend=backend).z.shape == (0, 2, 3)
