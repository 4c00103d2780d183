"""InfoNCE over J = 2 views: reference eager, torch.compile of it, and each kernel backend.

Nominal work (the same for every provider, so TFLOP/s compare): the forward is one N x N x D product
(2 N^2 D FLOPs: S = Z Z^T), the backward two (4 N^2 D: S again, and dL/dZ = (G + G^T) Z), as an unfused
implementation computes them; a kernel that does less (s_ik = s_ki) shows a higher rate than it executes.
Bytes are left out: at these sizes InfoNCE is bound by arithmetic, not memory.
"""
import torch

import simvae_fast
from harness import Case
from providers import reference_or_compiled
from simvae_fast import reference

SIZES = [(64, 16), (1024, 128), (4096, 128), (8192, 128), (16384, 128)]  # (N rows, D); 64 x 16: a smoke size
FLOPS_PER_N2D = {"forward": 2, "backward": 4, "full": 6}
VIEWS = 2


def _make(n, d):
    def make(provider, device, dtype):
        z = torch.randn(n // VIEWS, VIEWS, d, device=device, dtype=dtype, requires_grad=True)
        if provider in ("reference", "compile"):
            loss = reference_or_compiled(provider, reference.info_nce)
            return lambda: loss(z)
        return lambda: simvae_fast.info_nce(z, backend=provider)

    return make


def _work(n, d):
    return lambda mode, dtype: (FLOPS_PER_N2D[mode] * n * n * d, 0)


CASES = [Case("info_nce", f"N={n},D={d},J={VIEWS}", _make(n, d), work=_work(n, d)) for n, d in SIZES]
