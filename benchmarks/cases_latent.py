"""Fused latent op (reparameterised sample + entropy + grouped-view prior), forward+backward.

Providers: the reference composition eager ("reference") and torch.compile'd ("compile"), and each kernel
backend of simvae_latent. Two noise variants per shape:
  eps=given  every provider gets the same ε tensor;
  eps=inside the kernels make ε from a seed (Philox, in-kernel); the reference draws it with torch.randn_like.
Each closure returns the three outputs (z, log_prior, entropy) with fixed random upstream gradients for them,
so the backward is the op's own backward, as in a model where the decoder consumes z.
Nominal bytes of n = G*J*D elements (the least a fused op moves): the forward reads mu, logvar (and eps when
given) and writes z, 3n (4n) values; the backward reads dz, mu, logvar (and eps) and writes dmu, dlogvar,
5n (6n) values; per-group outputs are negligible. No FLOPs: the op is bound by memory (or launches).
"""
import torch

import simvae_fast
from harness import Case
from providers import reference_or_compiled
from simvae_fast import reference

SHAPES = [(64, 2, 10), (4096, 2, 128), (16384, 4, 256)]
SIGMA2, PRIOR = 0.15, "gaussian"


def reference_latent(mu, logvar, eps):
    """The eager composition of the three reference functions (what an unfused model computes)."""
    if eps is None:
        eps = torch.randn_like(mu)
    z = reference.reparameterize(mu, logvar, eps)
    return z, reference.grouped_prior_log_prob(z, sigma2=SIGMA2, prior=PRIOR), reference.gaussian_entropy(logvar)


def kernel_latent(provider, mu, logvar, eps):
    noise = {"eps": eps} if eps is not None else {"seed": 1234}
    return simvae_fast.simvae_latent(mu, logvar, sigma2=SIGMA2, prior=PRIOR, backend=provider, **noise)


def _make(shape, eps_given):
    def make(provider, device, dtype):
        mu = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        logvar = (0.5 * torch.randn(shape, device=device, dtype=dtype) - 1.0).requires_grad_()
        eps = torch.randn(shape, device=device, dtype=dtype) if eps_given else None
        upstream = (torch.randn(shape, device=device, dtype=dtype), torch.randn(shape[0], device=device),
                    torch.randn(shape[0], device=device))
        if provider in ("reference", "compile"):
            latent = reference_or_compiled(provider, reference_latent)
            return lambda: (latent(mu, logvar, eps), upstream)
        return lambda: (tuple(kernel_latent(provider, mu, logvar, eps)), upstream)

    return make


VALUES_PER_ELEMENT = {"forward": 3, "backward": 5, "full": 8}


def _work(shape, eps_given):
    n = shape[0] * shape[1] * shape[2]

    def work(mode, dtype):
        values = VALUES_PER_ELEMENT[mode] + eps_given * (2 if mode == "full" else 1)
        return 0, values * n * torch.empty((), dtype=dtype).element_size()

    return work


CASES = [
    Case("latent", "G={},J={},D={},eps={}".format(*shape, "given" if eps_given else "inside"), _make(shape, eps_given),
         work=_work(shape, eps_given))
    for shape in SHAPES
    for eps_given in (True, False)
]
