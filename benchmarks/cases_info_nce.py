"""InfoNCE: reference eager, torch.compile of it, and each kernel backend.

J = 2 views with normalize=True (SimCLR) at every size; at N = 8192 also J = 4 views and normalize=False.
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

# (N rows, D, J views, normalize); 64 x 16: a smoke size (gpu_check.sh --dry-run)
SIZES = [(64, 16, 2, True), (1024, 128, 2, True), (4096, 128, 2, True), (8192, 128, 2, True),
         (16384, 128, 2, True), (8192, 128, 4, True), (8192, 128, 2, False)]
FLOPS_PER_N2D = {"forward": 2, "backward": 4, "full": 6}


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


def _work(n, d):
    return lambda mode, dtype: (FLOPS_PER_N2D[mode] * n * n * d, 0)


CASES = [Case("info_nce", _label(*size), _make(*size), work=_work(*size[:2])) for size in SIZES]
