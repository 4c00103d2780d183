"""InfoNCE custom ops: fake (meta) kernels, autograd, and the functional entry over them.

Each backend is a pair of ops with one schema (csrc/info_nce_cpu.cpp):
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
from simvae_fast.backends import backends


def _fake_forward(z, temperature, normalize, positives_logsumexp):
    n = z.shape[0] * z.shape[1]
    acc = accumulation_dtype(z.dtype)
    return tuple(z.new_empty(n, dtype=acc) for _ in range(3))


def _fake_backward(grad_loss, z, temperature, lse, positive, normalize, positives_logsumexp):
    return torch.empty_like(z), torch.empty_like(temperature)


def _register_autograd(forward, backward):
    def setup_context(ctx, inputs, output):
        z, temperature, normalize, positives_logsumexp = inputs
        _, lse, positive = output
        ctx.save_for_backward(z, temperature, lse, positive)
        ctx.options = (normalize, positives_logsumexp)

    def backward_rule(ctx, grad_loss, grad_lse, grad_positive):
        z, temperature, lse, positive = ctx.saved_tensors
        if grad_loss is None:
            grad_loss = torch.zeros_like(lse)
        grad_z, grad_temperature = backward(grad_loss, z, temperature, lse, positive, *ctx.options)
        return grad_z, grad_temperature, None, None

    torch.library.register_autograd(forward, backward_rule, setup_context=setup_context)


FORWARD = {}

if backends()["cpu"].usable:
    torch.library.register_fake("simvae_fast::info_nce_forward")(_fake_forward)
    torch.library.register_fake("simvae_fast::info_nce_backward")(_fake_backward)
    _register_autograd("simvae_fast::info_nce_forward", torch.ops.simvae_fast.info_nce_backward)
    FORWARD["cpu"] = FORWARD["cuda"] = torch.ops.simvae_fast.info_nce_forward

if backends()["triton"].usable:
    from simvae_fast.kernels import info_nce as _triton_kernels

    @torch.library.custom_op("simvae_fast::info_nce_triton_forward", mutates_args=())
    def info_nce_triton_forward(
        z: torch.Tensor, temperature: torch.Tensor, normalize: bool, positives_logsumexp: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _triton_kernels.forward(z, temperature, normalize, positives_logsumexp)

    @torch.library.custom_op("simvae_fast::info_nce_triton_backward", mutates_args=())
    def info_nce_triton_backward(
        grad_loss: torch.Tensor,
        z: torch.Tensor,
        temperature: torch.Tensor,
        lse: torch.Tensor,
        positive: torch.Tensor,
        normalize: bool,
        positives_logsumexp: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _triton_kernels.backward(grad_loss, z, temperature, lse, positive, normalize, positives_logsumexp)

    info_nce_triton_forward.register_fake(_fake_forward)
    info_nce_triton_backward.register_fake(_fake_backward)
    _register_autograd(info_nce_triton_forward, info_nce_triton_backward)
    FORWARD["triton"] = torch.ops.simvae_fast.info_nce_triton_forward


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
