"""InfoNCE: reference eager, torch.compile of it, and each kernel backend.

J = 2 views with normalize=True (SimCLR) at every size; at N = 8192 also J = 4 views and normalize=False.
"""
import torch

import simvae_fast
from harness import Case
from providers import reference_or_compiled
from simvae_fast import reference

# (N rows, D, J views, normalize)
SIZES = [(1024, 128, 2, True), (4096, 128, 2, True), (8192, 128, 2, True), (16384, 128, 2, True),
         (8192, 128, 4, True), (8192, 128, 2, False)]


def _make(n, d, views, normalize):
    def make(provider, device, dtype):
        z = torch.randn(n // views, views, d, device=device, dtype=dtype) * (1.0 if normalize else d**-0.5)
        z.requires_grad_(True)  # unnormalised: rows of norm ~1, logits in the normalised case's range
        if provider in ("reference", "compile"):
            loss = reference_or_compiled(provider, reference.info_nce)
            return lambda: loss(z, normalize=normalize)
        return lambda: simvae_fast.info_nce(z, normalize=normalize, backend=provider)

    return make


def _label(n, d, views, normalize):
    return f"N={n},D={d},J={views}" + ("" if normalize else ",normalize=False")


CASES = [Case("info_nce", _label(*size), _make(*size)) for size in SIZES]
