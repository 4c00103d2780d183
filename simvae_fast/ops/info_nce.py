"""InfoNCE custom ops: fake (meta) kernels, autograd (registered by ops/registry.py), and the functional entry.

Each backend is a pair of ops with one schema form (csrc/module.cpp):
    forward(z [G, J, D], temperature [] , normalize, positives_logsumexp) -> (loss [N], lse [N], positive [N])
    backward(grad_loss [N], z, temperature, lse, positive, normalize, positives_logsumexp)
        -> (grad_z [G, J, D], grad_temperature [])
loss, lse, positive and temperature are in the accumulation dtype (float64 for float64 z, else float32);
lse and positive are saved for the backward (one float each per row) and carry no gradient.
"cpu" and "cuda" are the extension's simvae_fast::info_nce_forward/backward (dispatched on the device);
"triton" is simvae_fast::info_nce_triton_forward/backward (kernels/info_nce.py).
"""
import torch

from simvae_fast._dtypes import accumulation_dtype
from simvae_fast.ops import registry


def _fake_forward(z, temperature, normalize, positives_logsumexp):
    n = z.shape[0] * z.shape[1]
    acc = accumulation_dtype(z.dtype)
    return tuple(z.new_empty(n, dtype=acc) for _ in range(3))


def _fake_backward(grad_loss, z, temperature, lse, positive, normalize, positives_logsumexp):
    return torch.empty_like(z), torch.empty_like(temperature)


def _setup_context(ctx, inputs, output):
    z, temperature, normalize, positives_logsumexp = inputs
    _, lse, positive = output
    ctx.save_for_backward(z, temperature, lse, positive)
    ctx.options = (normalize, positives_logsumexp)


def _make_backward(backward_op):
    def backward(ctx, grad_loss, grad_lse, grad_positive):
        z, temperature, lse, positive = ctx.saved_tensors
        if grad_loss is None:
            grad_loss = torch.zeros_like(lse)
        grad_z, grad_temperature = backward_op(grad_loss, z, temperature, lse, positive, *ctx.options)
        return grad_z, grad_temperature, None, None

    return backward


def _triton_forward(
    z: torch.Tensor, temperature: torch.Tensor, normalize: bool, positives_logsumexp: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from simvae_fast.kernels import info_nce as kernels

    return kernels.forward(z, temperature, normalize, positives_logsumexp)


def _triton_backward(
    grad_loss: torch.Tensor,
    z: torch.Tensor,
    temperature: torch.Tensor,
    lse: torch.Tensor,
    positive: torch.Tensor,
    normalize: bool,
    positives_logsumexp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    from simvae_fast.kernels import info_nce as kernels

    return kernels.backward(grad_loss, z, temperature, lse, positive, normalize, positives_logsumexp)


FORWARD, info_nce_triton_forward, info_nce_triton_backward = registry.register(
    "info_nce", fake_forward=_fake_forward, fake_backward=_fake_backward, setup_context=_setup_context,
    make_backward=_make_backward, triton_forward=_triton_forward, triton_backward=_triton_backward)


def info_nce(z, temperature, normalize, positives, reduction, *, backend):
    """The fused InfoNCE of `backend` ("cpu", "triton" or "cuda"); arguments validated by the caller."""
    acc = accumulation_dtype(z.dtype)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(acc)
    else:
        temperature = torch.tensor(float(temperature), dtype=acc, device=z.device)
    loss, _, _ = FORWARD[backend](z, temperature, normalize, positives == "logsumexp")
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(z.dtype)
