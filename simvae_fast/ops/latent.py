"""Custom ops of the fused latent op, with fake (meta) kernels and autograd, registered by ops/registry.py.

simvae_fast::latent_forward / latent_backward: the C++ extension's ops (CPU kernels in csrc/latent_cpu.cpp,
CUDA kernels in csrc/cuda/); simvae_fast::latent_triton_forward / latent_triton_backward: the Triton
launchers of simvae_fast.kernels.latent. Both pairs take (mu, logvar, eps or None, seed, offset, sigma2, prior)
and return (z, log_prior, entropy).

Backward: neither stores ε. It saves μ and logvar (and eps when given, which the caller holds anyway), and
  - for float32/float64 inputs also the output z (which the decoder keeps alive anyway), passed to the
    backward op as `z`: it takes std·ε = z − μ from it and needs no ε, no exp and no logvar read. In fp32 the
    relative error of std·ε is ≈ 2⁻²⁴·|z|/|std·ε| (≈ 6e-7 for std ≈ 0.1, |μ| ≈ 1), below the output's own
    rounding. z is then a saved output: modifying it in place before backward raises autograd's usual error.
  - for float16/bfloat16 inputs not z: the op recomputes z and std·ε in fp32 from μ, logvar and ε (regenerated
    from (seed, offset) or re-read), the exact fp32 values of the forward. z − μ from a z rounded to 8 bits
    would give the noise part of dlogvar a relative error ≈ 2⁻⁹·|z|/|std·ε|, ≈ 2 % or more for a trained
    encoder's std ≈ 0.1 and |μ| ≈ 1 (see test_backward_bf16_beats_saved_z in tests/test_latent.py).
"""
from typing import Optional

import torch

from simvae_fast._dtypes import accumulation_dtype
from simvae_fast.ops import registry


def _fake_forward(mu, logvar, eps, seed, offset, sigma2, prior):
    acc = accumulation_dtype(mu.dtype)
    G = mu.shape[0]
    return (
        mu.new_empty(mu.shape),
        mu.new_empty((G,), dtype=acc),
        mu.new_empty((G,), dtype=acc),
    )


def _fake_backward(grad_z, grad_log_prior, grad_entropy, mu, logvar, eps, z, seed, offset, sigma2, prior):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


def _backward_uses_saved_z(dtype):
    """std·ε = z − μ is precise enough in float32/float64 only (module docstring)."""
    return dtype in (torch.float32, torch.float64)


def _setup_context(ctx, inputs, output):
    mu, logvar, eps, seed, offset, sigma2, prior = inputs
    ctx.save_for_backward(mu, logvar, eps, output[0] if _backward_uses_saved_z(mu.dtype) else None)
    ctx.call = (seed, offset, sigma2, prior)


def _upstream(grad_z, grad_log_prior, grad_entropy, mu):
    """Upstream gradients, with zeros for outputs that got none."""
    G, acc = mu.shape[0], accumulation_dtype(mu.dtype)
    grad_z = torch.zeros_like(mu) if grad_z is None else grad_z
    grad_log_prior = mu.new_zeros((G,), dtype=acc) if grad_log_prior is None else grad_log_prior
    grad_entropy = mu.new_zeros((G,), dtype=acc) if grad_entropy is None else grad_entropy
    return grad_z, grad_log_prior, grad_entropy


def _make_backward(backward_op):
    def backward(ctx, grad_z, grad_log_prior, grad_entropy):
        mu, logvar, eps, z = ctx.saved_tensors
        grads = _upstream(grad_z, grad_log_prior, grad_entropy, mu)
        grad_mu, grad_logvar = backward_op(*grads, mu, logvar, eps, z, *ctx.call)
        return grad_mu, grad_logvar, None, None, None, None, None

    return backward


def _triton_forward(
    mu: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor], seed: int, offset: int, sigma2: float,
    prior: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from simvae_fast.kernels.latent import latent_forward

    return latent_forward(mu, logvar, eps, seed, offset, sigma2, prior)


def _triton_backward(
    grad_z: torch.Tensor, grad_log_prior: torch.Tensor, grad_entropy: torch.Tensor, mu: torch.Tensor,
    logvar: torch.Tensor, eps: Optional[torch.Tensor], z: Optional[torch.Tensor], seed: int, offset: int,
    sigma2: float, prior: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    from simvae_fast.kernels.latent import latent_backward

    return latent_backward(grad_z, grad_log_prior, grad_entropy, mu, logvar, eps, z, seed, offset, sigma2, prior)


FORWARD, latent_triton_forward, latent_triton_backward = registry.register(
    "latent", fake_forward=_fake_forward, fake_backward=_fake_backward, setup_context=_setup_context,
    make_backward=_make_backward, triton_forward=_triton_forward, triton_backward=_triton_backward)


def latent(mu, logvar, eps, seed, offset, sigma2, prior, *, backend):
    """The fused latent op of `backend` ("cpu", "cuda" or "triton"); arguments validated by the caller."""
    return FORWARD[backend](mu, logvar, eps, 0 if seed is None else seed, offset, sigma2, prior)
