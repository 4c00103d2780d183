"""simvae_latent: reparameterised sampling + entropy + grouped-view prior, one public entry point.

Validates, picks a backend (simvae_fast.backends) and runs it. Backends are entries of IMPLEMENTATIONS,
each a function (mu, logvar, eps, seed, offset, sigma2, prior) -> (z, log_prior, entropy).
"""
import functools
from typing import NamedTuple

import torch

from simvae_fast import reference
from simvae_fast._checks import (
    check_choice,
    check_fused_size,
    check_positive,
    check_prior_views,
    check_same_latents,
)
from simvae_fast._dtypes import accumulation_dtype
from simvae_fast.backends import resolve_backend
from simvae_fast.ops import latent as latent_ops


class LatentOut(NamedTuple):
    z: torch.Tensor  # [G, J, D], mu's dtype
    log_prior: torch.Tensor  # [G], float32 (float64 for float64 inputs)
    entropy: torch.Tensor  # [G], float32 (float64 for float64 inputs)


def _reference_latent(mu, logvar, eps, seed, offset, sigma2, prior):
    acc, out_dtype = accumulation_dtype(mu.dtype), mu.dtype
    if eps is None:
        eps = reference.philox_randn(seed, offset, mu.shape, device=mu.device)
    mu, logvar, eps = mu.to(acc), logvar.to(acc), eps.to(acc)
    z = reference.reparameterize(mu, logvar, eps)
    log_prior = reference.grouped_prior_log_prob(z, sigma2=sigma2, prior=prior)
    return z.to(out_dtype), log_prior, reference.gaussian_entropy(logvar)


IMPLEMENTATIONS = {"reference": _reference_latent}
IMPLEMENTATIONS.update({name: functools.partial(latent_ops.latent, backend=name) for name in ("cpu", "cuda", "triton")})


def draw_seed():
    """A seed from torch's default generator, so torch.manual_seed makes runs reproducible."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64).item())


def simvae_latent(mu, logvar, *, sigma2=0.15, prior="gaussian", seed=None, offset=0, eps=None, backend="auto"):
    """z = mu + exp(logvar/2) * eps, the grouped-view prior log p(z) per group and the entropy per group.

    mu, logvar: [G, J, D] float32/float16/bfloat16 (float64 for tests), same dtype and device.
    Noise: `eps` shaped like mu, or counter-based normals from (seed, offset) equal to Triton's
    tl.randn(seed, offset + i) for element i (seed=None draws one from torch's default generator).
    Returns LatentOut(z, log_prior, entropy); differentiable in mu and logvar through all three.

    NaN/Inf: propagated, never raised on, on every backend: a NaN or infinite mu, logvar or eps element makes
    that element's z (and its gradients) non-finite, and the log prior of its group; the entropy of a group is
    non-finite only if its logvar is. Other groups are untouched. The fused backends take at most 2**31 - 1
    elements (a clear error beyond).
    """
    check_same_latents(mu=mu, logvar=logvar, eps=eps)
    check_choice("prior", prior, reference.PRIORS)
    check_positive("sigma2", sigma2)
    check_prior_views(prior, mu.shape[1])
    if eps is None:
        seed = draw_seed() if seed is None else seed
        if not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed: expected an int in [0, 2**63), got {seed!r}")
        if not isinstance(offset, int) or not 0 <= offset < 2**62:
            raise ValueError(f"offset: expected an int in [0, 2**62), got {offset!r}")
    name = resolve_backend(backend, mu.device, tuple(IMPLEMENTATIONS), op="latent")
    check_fused_size("mu", mu, name)
    return LatentOut(*IMPLEMENTATIONS[name](mu, logvar, eps, seed, offset, float(sigma2), prior))
