"""One registration for both fused ops (ops/latent.py, ops/info_nce.py), and which backend has each op's kernels.

A fused op OP is a forward/backward pair with the same schema form on every backend:
    "cpu", "cuda"  simvae_fast::OP_forward / OP_backward, defined by the C++ extension (csrc/module.cpp), with
                   CPU kernels in simvae_fast._C and CUDA kernels in simvae_fast._C_cuda (one op, dispatched on
                   the tensors' device);
    "triton"       simvae_fast::OP_triton_forward / OP_triton_backward: the Python launchers, wrapped here with
                   torch.library.custom_op (they import their Triton kernels at the first call).
register() gives every pair the same fake (meta) kernels and the same autograd formula, and records for each
backend whether this build has the op's kernels (a module can load without an op's kernel for its dispatch
key, e.g. a partial build). simvae_fast.backends.resolve_backend reads that record (a plain dict, filled at
import, which torch.compile reads without tracing a probe) and raises one error for an unusable backend:
"backend: 'NAME' is not usable here: REASON".
"""
import torch

from simvae_fast._extension import REBUILD
from simvae_fast.backends import backends, record_missing_kernel

DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}  # the extension's backends


def _missing_kernel(op, backend):
    """Why backend "cpu" or "cuda", usable, cannot run op OP (this build registered no kernel of it for the
    backend's dispatch key), or None."""
    name, key = f"simvae_fast::{op}_forward", DISPATCH_KEYS[backend]
    if backends()[backend].usable and not torch._C._dispatch_has_kernel_for_dispatch_key(name, key):
        return f"this build of the extension has no {key} kernel of {name}"
    return None


def _has_schemas(op):
    """Whether the loaded simvae_fast._C defines OP's schemas (a build from older sources may not: then the
    extension backends say so, and the rest of the package still imports)."""
    try:
        for half in ("forward", "backward"):
            getattr(torch.ops.simvae_fast, f"{op}_{half}")
    except (AttributeError, RuntimeError):
        return False
    return True


def register(op, *, fake_forward, fake_backward, setup_context, make_backward, triton_forward, triton_backward):
    """Registers op OP's backends. make_backward(backward_op) is the autograd rule calling that backend's
    backward op; triton_forward / triton_backward are the annotated Python launchers. Returns
    ({backend: forward op} for the backends that have one, triton forward op, triton backward op)."""
    forward = {}
    if backends()["cpu"].usable and not _has_schemas(op):
        for backend in DISPATCH_KEYS:
            record_missing_kernel(op, backend, f"the loaded simvae_fast._C has no schema of simvae_fast::{op}_forward "
                                               f"(built from older sources): rebuild it, {REBUILD}")
    elif backends()["cpu"].usable:  # simvae_fast._C loaded: the schemas exist
        torch.library.register_fake(f"simvae_fast::{op}_forward")(fake_forward)
        torch.library.register_fake(f"simvae_fast::{op}_backward")(fake_backward)
        extension_backward = getattr(torch.ops.simvae_fast, f"{op}_backward")
        torch.library.register_autograd(f"simvae_fast::{op}_forward", make_backward(extension_backward),
                                        setup_context=setup_context)
        for backend in DISPATCH_KEYS:
            forward[backend] = getattr(torch.ops.simvae_fast, f"{op}_forward")
        for backend in DISPATCH_KEYS:
            missing = _missing_kernel(op, backend)
            if missing:
                record_missing_kernel(op, backend, missing)

    triton_fwd = torch.library.custom_op(f"simvae_fast::{op}_triton_forward", triton_forward, mutates_args=())
    triton_bwd = torch.library.custom_op(f"simvae_fast::{op}_triton_backward", triton_backward, mutates_args=())
    triton_fwd.register_fake(fake_forward)
    triton_bwd.register_fake(fake_backward)
    triton_fwd.register_autograd(make_backward(triton_bwd), setup_context=setup_context)
    forward["triton"] = getattr(torch.ops.simvae_fast, f"{op}_triton_forward")
    return forward, triton_fwd, triton_bwd
