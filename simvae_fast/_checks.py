"""Input validation shared by the reference and the fused ops.

Every error names the argument, what was expected and what was given.
"""
import numbers

import torch

GROUP_PRIORS = ("gaussian", "flat", "official")


def _describe(t):
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_latent(name, t):
    """A [G, J, D] floating-point tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape [G, J, D], got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name}: expected a 3-D tensor [G groups, J views, D dims], got {_describe(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {_describe(t)}")


def check_same_latents(**tensors):
    """Each given tensor is a latent, and all share the first one's shape, dtype and device."""
    (first_name, first), *rest = [(n, t) for n, t in tensors.items() if t is not None]
    check_latent(first_name, first)
    for name, t in rest:
        check_latent(name, t)
        for what in ("shape", "dtype", "device"):
            if getattr(t, what) != getattr(first, what):
                raise ValueError(
                    f"{name}: expected the same {what} as {first_name} ({_describe(first)}), got {_describe(t)}"
                )


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def check_positive(name, value):
    """A positive finite number, or a 0-dim floating-point tensor. A tensor's value is checked only on the CPU and
    outside torch.compile: reading a GPU tensor would synchronise the host with the device on every call."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(f"{name}: expected a float or a 0-dim floating-point tensor, got {_describe(value)}")
        if torch.compiler.is_compiling() or value.device.type != "cpu":
            return
        value_f = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        value_f = float(value)
    else:
        raise TypeError(f"{name}: expected a positive float, got {type(value).__name__} {value!r}")
    if not value_f > 0.0 or value_f == float("inf"):
        raise ValueError(f"{name}: expected a positive finite value, got {value_f!r}")


def check_prior_views(prior, views):
    if prior in GROUP_PRIORS and views < 2:
        raise ValueError(
            f"prior: {prior!r} couples the views of a group and needs J >= 2 views, got J = {views}; "
            "use prior='standard' for one view"
        )


# The fused kernels index with 64-bit integers, but nothing past this size has been run through them (and the
# GPU grids have 2**31 - 1 blocks at most): larger inputs are refused rather than trusted untested.
MAX_FUSED_ELEMENTS = 2**31 - 1


def check_fused_size(name, t, backend):
    if backend != "reference" and t.numel() > MAX_FUSED_ELEMENTS:
        raise ValueError(
            f"{name}: expected at most {MAX_FUSED_ELEMENTS} (2**31 - 1) elements for the fused {backend!r} backend, "
            f"got {t.numel()} (shape {tuple(t.shape)}); split the batch or use backend='reference'"
        )
