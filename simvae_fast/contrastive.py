"""info_nce: InfoNCE / NT-Xent over groups of views, one public entry point.

Validates, picks a backend (simvae_fast.backends) and runs it. Backends are entries of IMPLEMENTATIONS,
each a function (z, temperature, normalize, positives, reduction) -> loss.
"""
import functools

import torch

from simvae_fast import reference
from simvae_fast._checks import check_choice, check_fused_size, check_latent, check_positive
from simvae_fast.backends import resolve_backend
from simvae_fast.ops import info_nce as fused

IMPLEMENTATIONS = {"reference": reference.info_nce}
IMPLEMENTATIONS.update({name: functools.partial(fused.info_nce, backend=name) for name in ("cpu", "cuda", "triton")})


def info_nce(z, *, temperature=0.5, normalize=True, positives="mean", reduction="mean", backend="auto"):
    """InfoNCE over the N = G*J rows of z [G, J, D]: the other views of a row's group are its positives,
    every other row is in its denominator (self-similarity excluded).

    temperature: a float, or a 0-dim tensor (its gradient is returned when it requires grad).
    positives: "mean" (SupCon L_out) or "logsumexp" (solo-learn); reduction: "mean", "sum" or "none" ([N]).
    For J = 2 this is SimCLR's NT-Xent.

    The fused backends ("cpu", "triton", "cuda") never form the N x N logits: memory O(N*D + N*tile), fp32
    accumulation (fp64 for float64 z). A tensor temperature must be on z's device (any float dtype:
    it is used in the accumulation dtype, so a float32 learnable temperature works with bfloat16 z).
    NaN: a NaN anywhere in z makes the loss NaN (every row's denominator sees every row), and so its
    gradients; the kernels neither raise nor hang on it. An infinite element behaves the same way (with
    normalize=True it normalises to NaN). The fused backends take at most 2**31 - 1 elements.
    """
    check_latent("z", z)
    if z.shape[1] < 2:
        raise ValueError(f"z: expected J >= 2 views per group, got shape {tuple(z.shape)}")
    if isinstance(temperature, torch.Tensor) and temperature.device != z.device:
        raise ValueError(f"temperature: expected a tensor on z's device {z.device}, got {temperature.device}")
    check_positive("temperature", temperature)
    check_choice("positives", positives, reference.POSITIVES)
    check_choice("reduction", reduction, reference.REDUCTIONS)
    name = resolve_backend(backend, z.device, tuple(IMPLEMENTATIONS), op="info_nce")
    check_fused_size("z", z, name)
    return IMPLEMENTATIONS[name](z, temperature, normalize, positives, reduction)
