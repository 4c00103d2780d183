"""Which backends are usable here, and which one a call runs on.

Backends: "reference" (pure PyTorch, always usable), "cpu" (the C++ extension, CPU tensors),
"triton" (GPU tensors, or CPU tensors under TRITON_INTERPRET=1), "cuda" (the extension's CUDA kernels).
backend="auto" takes SIMVAE_FAST_BACKEND when set, else the fastest usable backend for the tensors'
device; when it has to fall back to the reference it warns once per device.
"""
import functools
import importlib.util
import os
import warnings
from typing import NamedTuple

import torch

from simvae_fast import _extension

BACKENDS = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "SIMVAE_FAST_BACKEND"
# Preference order of "auto" per op and device type (fastest first). No GPU has run these kernels yet, so the CUDA
# orders come from the compiled code (sm_90 SASS, kernels/info_nce.py) and the H200 roofline; replace them with
# measurements once benchmarks/gpu_check.sh has produced some.
# - info_nce: Triton first. Its kernels put the products on the tensor cores (HGMMA in bf16/fp16, TF32 when torch
#   allows it) and visit each pair of row blocks once (4 N^2 D FLOPs); the CUDA kernel has no tensor-core
#   instruction and streams every column tile per row block (6 N^2 D FLOPs on FFMA at ~1/12 of the bf16 rate).
# - latent: CUDA first. Both backends are one memory-bound pass each way (3n / 5n values moved), so the device
#   time is the same; at SSL sizes the op is launch-bound, and a C++ op dispatch costs less host time than a
#   Python Triton launcher.
AUTO_ORDER = {
    "info_nce": {"cpu": ("cpu",), "cuda": ("triton", "cuda")},
    "latent": {"cpu": ("cpu",), "cuda": ("cuda", "triton")},
}
DEFAULT_OP = "info_nce"


class Availability(NamedTuple):
    usable: bool
    reason: str


def _probe(name):
    if name == "reference":
        return Availability(True, "pure PyTorch")
    if name in ("cpu", "cuda"):
        return Availability(*_extension.availability(name))
    if importlib.util.find_spec("triton") is None:
        return Availability(False, "triton is not installed")
    if torch.cuda.is_available():
        return Availability(True, "GPU present")
    if interpreting():
        return Availability(True, "TRITON_INTERPRET=1 (CPU tensors, slow: for tests)")
    return Availability(False, "no GPU, and TRITON_INTERPRET is not 1")


_AVAILABILITY = {}
_OP_AVAILABILITY = {}  # (op, backend) -> Availability where an op's kernels narrow its backend's (ops/registry.py)


def _availability(name):
    """Probed once per process (plain dicts, which torch.compile reads without tracing the probe)."""
    if name not in _AVAILABILITY:
        _AVAILABILITY[name] = _probe(name)
    return _AVAILABILITY[name]


def _op_availability(name, op):
    """Backend `name`'s availability for op `op`: the backend's, unless the op's registration narrowed it."""
    return _OP_AVAILABILITY.get((op, name)) or _availability(name)


def record_missing_kernel(op, name, reason):
    """Backend `name` is usable but has no kernel of op `op` (simvae_fast/ops/registry.py)."""
    _OP_AVAILABILITY[(op, name)] = Availability(False, reason)


def interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


def backends():
    """{name: Availability(usable, reason)} for every backend."""
    return {name: _availability(name) for name in BACKENDS}


backends()  # probe at import, outside any compiled region


def _serves(name, device):
    """Whether backend `name` runs on tensors of `device`."""
    if name == "reference":
        return True
    if name == "cpu":
        return device.type == "cpu"
    if name == "cuda":
        return device.type == "cuda"
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


@functools.cache
def _warn_fallback(device_type, candidates, op=DEFAULT_OP):
    reasons = "; ".join(f"{name}: {_op_availability(name, op).reason}" for name in candidates)
    reasons = reasons or "no fused backend implements this op"
    warnings.warn(
        f"simvae_fast: no fused backend is usable for {device_type} tensors ({reasons}); "
        "running the pure-PyTorch reference",
        RuntimeWarning,
        stacklevel=4,
    )


def resolve_backend(backend, device, implemented=BACKENDS, op=DEFAULT_OP):
    """The backend a call of `op` ("info_nce" or "latent") on tensors of `device` runs on, among the backends
    the op `implemented`; a clear error if the one asked for can't run it."""
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto") or "auto"
    if backend == "auto":
        order = AUTO_ORDER[op].get(device.type, ())
        for name in order:
            if name in implemented and _op_availability(name, op).usable:
                return name
        _warn_fallback(device.type, tuple(n for n in order if n in implemented), op)
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend not in implemented:
        raise ValueError(f"backend: {backend!r} does not implement this op (it has {', '.join(implemented)})")
    availability = _op_availability(backend, op)
    if not availability.usable:
        raise RuntimeError(f"backend: {backend!r} is not usable here: {availability.reason}")
    if not _serves(backend, device):
        raise ValueError(f"backend: {backend!r} does not run on {device.type} tensors")
    return backend
