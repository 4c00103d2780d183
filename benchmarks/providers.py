"""How each provider runs a reference function: eager, torch.compile'd (one compile per function), or a kernel."""
import functools

import torch


@functools.cache
def compiled(fn):
    return torch.compile(fn, dynamic=False)


def reference_or_compiled(provider, fn):
    """The reference function `fn` itself for "reference", its torch.compile for "compile"."""
    if provider == "reference":
        return fn
    if provider == "compile":
        return compiled(fn)
    raise ValueError(f"provider: expected 'reference' or 'compile', got {provider!r}")
