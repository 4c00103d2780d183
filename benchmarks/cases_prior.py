"""The grouped-view prior alone, reference eager vs torch.compile (the fused latent op includes it)."""
import torch

from harness import Case
from providers import reference_or_compiled
from simvae_fast import reference

SHAPES = [(64, 2, 10), (4096, 2, 128), (16384, 4, 256)]


def _make(shape):
    def make(provider, device, dtype):
        z = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        prior = reference_or_compiled(provider, reference.grouped_prior_log_prob)
        return lambda: prior(z).sum()

    return make


CASES = [Case("prior", "G={},J={},D={}".format(*s), _make(s), ("reference", "compile")) for s in SHAPES]
