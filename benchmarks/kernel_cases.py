"""The launcher calls kernel_check.py makes: every way the ops call the Triton launchers, on CPU tensors.

A case is one forward launcher call followed by its backward, as the op's autograd makes them, for one input
dtype, feature size D and set of options (each launcher's boolean arguments, and the torch switches a launcher
may read: the float32 matmul precision for fp32 inputs, deterministic algorithms). The kernels they launch are
whatever the launchers choose; nothing here names a kernel. Sizes are training-like (N = 8192 rows of InfoNCE,
G = 4096 groups of the latent op) so that the launchers pick the tile sizes and integer specialisations
(divisibility by 16) of real use; on the stand-in driver nothing runs, so the size costs only allocation.
"""
import contextlib
import itertools
from dataclasses import dataclass
from typing import Callable

import torch

from simvae_fast.kernels import info_nce as info_nce_kernels
from simvae_fast.kernels import latent as latent_kernels
from simvae_fast.ops.latent import _backward_uses_saved_z

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
DIMS = (10, 64, 128, 129, 256)
ROWS, VIEWS = 8192, 2  # InfoNCE: N rows in groups of J views
GROUPS = 4096  # latent op: G groups of J views
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


@dataclass(frozen=True)
class Case:
    op: str  # the kernel module's name: "info_nce", "latent"
    dtype: torch.dtype
    dim: int
    options: str  # what else was chosen, as "name=value" pairs
    run: Callable[[], None]

    @property
    def dtype_name(self):
        return SHORT[self.dtype]

    @property
    def label(self):
        return f"{self.op} {self.dtype_name} D={self.dim} {self.options}"


@contextlib.contextmanager
def torch_switches(matmul_precision, deterministic):
    previous = torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled()
    torch.set_float32_matmul_precision(matmul_precision)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _info_nce(dtype, dim, normalize, positives_lse, precision, deterministic):
    def run():
        z = torch.randn(ROWS // VIEWS, VIEWS, dim, dtype=dtype)
        temperature = torch.tensor(0.5, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        with torch_switches(precision, deterministic):
            loss, lse, pos = info_nce_kernels.forward(z, temperature, normalize, positives_lse)
            info_nce_kernels.backward(torch.ones_like(loss), z, temperature, lse, pos, normalize, positives_lse)

    return run


def _latent(dtype, dim, eps_given, prior, deterministic):
    def run():
        shape = (GROUPS, VIEWS, dim)
        mu, logvar = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
        eps = torch.randn(shape, dtype=dtype) if eps_given else None
        with torch_switches("highest", deterministic):
            z, log_prior, entropy = latent_kernels.latent_forward(mu, logvar, eps, 1234, 0, 0.15, prior)
            saved_z = z if _backward_uses_saved_z(dtype) else None
            latent_kernels.latent_backward(torch.ones_like(z), torch.ones_like(log_prior), torch.ones_like(entropy),
                                           mu, logvar, eps, saved_z, 1234, 0, 0.15, prior)

    return run


def cases(dtypes=DTYPES, dims=DIMS):
    for dtype, dim in itertools.product(dtypes, dims):
        precisions = ("highest", "high") if dtype == torch.float32 else ("highest",)
        for normalize, positives_lse, precision, deterministic in itertools.product(
                (True, False), (False, True), precisions, (False, True)):
            options = (f"normalize={normalize} positives={'logsumexp' if positives_lse else 'mean'} "
                       f"fp32_matmul={precision} deterministic={deterministic}")
            yield Case("info_nce", dtype, dim, options,
                       _info_nce(dtype, dim, normalize, positives_lse, precision, deterministic))
        for eps_given, prior, deterministic in itertools.product((False, True), ("gaussian", "standard"),
                                                                 (False, True)):
            options = f"eps={'given' if eps_given else 'inside'} prior={prior} deterministic={deterministic}"
            yield Case("latent", dtype, dim, options, _latent(dtype, dim, eps_given, prior, deterministic))
