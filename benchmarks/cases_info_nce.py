"""InfoNCE over J = 2 views: reference eager, torch.compile of it, and each kernel backend."""
import torch

import simvae_fast
from harness import Case
from providers import reference_or_compiled
from simvae_fast import reference

SIZES = [(1024, 128), (4096, 128), (8192, 128), (16384, 128)]  # (N rows, D)
VIEWS = 2


def _make(n, d):
    def make(provider, device, dtype):
        z = torch.randn(n // VIEWS, VIEWS, d, device=device, dtype=dtype, requires_grad=True)
        if provider in ("reference", "compile"):
            loss = reference_or_compiled(provider, reference.info_nce)
            return lambda: loss(z)
        return lambda: simvae_fast.info_nce(z, backend=provider)

    return make


CASES = [Case("info_nce", f"N={n},D={d},J={VIEWS}", _make(n, d)) for n, d in SIZES]
