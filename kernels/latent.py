"""Triton kernels of the fused latent op: reparameterised sample, entropy and grouped-view prior (docs/math.md §2-3).

Layout: mu, logvar, eps, z contiguous [G, J, D]; element (g, j, d) has linear index i = (g·J + j)·D + d, and
the in-kernel noise is ε_i = tl.randn(seed, offset + i) with a 64-bit counter (never stored). A program
holds a [BLOCK_J ≥ J, BLOCK_D] tile: all views of a group for BLOCK_D dims, so z̄ is a reduction over the
tile's first axis. The prior variant enters as GROUPED (constexpr) plus the per-call coefficients of
csrc/latent_prior.h (a small tensor in the accumulation dtype, so float64 runs keep float64 constants):
    grouped:  log p = const − within·S_w − mean·M,   S_w = Σ_j ‖z_j − z̄‖²,  M = ‖z̄‖²
    standard: log p = const − within·Σ_j ‖z_j‖²      (within = ½)
    H = entropy_const + ½ Σ logvar
Loaded values are upcast right after the load (the interpreter's bf16 arithmetic is wrong); all arithmetic
and sums run in fp32, or fp64 for fp64 inputs, and the only casts are the final stores (so the interpreter
rounds where the GPU does). One pass each way; per element the forward reads mu, logvar (and eps) and writes z,
the backward reads dz, mu, logvar (or saved z) and writes dmu, dlogvar. Compiled for sm_90 (Triton 3.9) no
kernel spills at D in {10, 64, 128, 129, 256} in fp32/bf16/fp16 (<= 56 registers; benchmarks/results/
triton_kernels.md). Launchers: the tensors' device made current; G = 0 or D = 0 launch nothing (the log prior
and entropy of an empty sum are their constants).
"""
import functools
import math

import torch
import triton
import triton.language as tl

from simvae_fast._dtypes import accumulation_dtype
from simvae_fast.kernels.launch import device_guard

MAX_TILE = 2048  # elements of the [BLOCK_J, BLOCK_D] tile of one program


@triton.jit
def _latent_forward_kernel(
    mu_ptr, logvar_ptr, eps_ptr, z_ptr, log_prior_ptr, entropy_ptr, coef_ptr,
    seed, offset, J, D,
    GROUPED: tl.constexpr, EPS_GIVEN: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per group, sweeping D in tiles:
    #   z = μ + exp(½ logvar)·ε   (stored)
    #   grouped: z̄_d = (1/J) Σ_j z_jd;  S_w += Σ_j (z_jd − z̄_d)²  (exact two-pass within the tile);  M += z̄_d²
    #   standard: S += Σ_j z_jd²
    # then log p = const − within·S_w − mean·M and H = entropy_const + ½ Σ logvar.
    acc_dtype = coef_ptr.dtype.element_ty
    group = tl.program_id(0).to(tl.int64)
    views = tl.arange(0, BLOCK_J)[:, None]
    group_start = group * J * D
    within_sum = tl.zeros([BLOCK_D], dtype=acc_dtype)
    mean_sum = tl.zeros([BLOCK_D], dtype=acc_dtype)
    logvar_sum = tl.zeros([BLOCK_D], dtype=acc_dtype)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)[None, :]
        mask = (views < J) & (dims < D)
        index = group_start + views * D + dims
        mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(acc_dtype)
        logvar = tl.load(logvar_ptr + index, mask=mask, other=0.0).to(acc_dtype)
        if EPS_GIVEN:
            eps = tl.load(eps_ptr + index, mask=mask, other=0.0).to(acc_dtype)
        else:
            eps = tl.randn(seed, offset + index).to(acc_dtype)
        z = tl.where(mask, mu + tl.exp(0.5 * logvar) * eps, 0.0)
        tl.store(z_ptr + index, z.to(z_ptr.dtype.element_ty), mask=mask)
        if GROUPED:
            z_bar = tl.sum(z, axis=0) / J
            deviation = tl.where(mask, z - z_bar[None, :], 0.0)
            within_sum += tl.sum(deviation * deviation, axis=0)
            mean_sum += z_bar * z_bar
        else:
            within_sum += tl.sum(z * z, axis=0)
        logvar_sum += tl.sum(logvar, axis=0)
    within = tl.load(coef_ptr)
    mean = tl.load(coef_ptr + 1)
    log_prior = tl.load(coef_ptr + 2) - within * tl.sum(within_sum, axis=0) - mean * tl.sum(mean_sum, axis=0)
    tl.store(log_prior_ptr + group, log_prior)
    tl.store(entropy_ptr + group, tl.load(coef_ptr + 3) + 0.5 * tl.sum(logvar_sum, axis=0))


@triton.jit
def _latent_backward_kernel(
    grad_z_ptr, grad_log_prior_ptr, grad_entropy_ptr, mu_ptr, logvar_ptr, eps_ptr, saved_z_ptr,
    grad_mu_ptr, grad_logvar_ptr, coef_ptr,
    seed, offset, J, D,
    GROUPED: tl.constexpr, EPS_GIVEN: tl.constexpr, Z_SAVED: tl.constexpr, BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (group, D-tile); z and t = std·ε are the forward's: with Z_SAVED (float32/float64) the
    # saved z and t = z − μ (relative error ≈ 2⁻²⁴·|z|/|t| in fp32, see csrc/latent_cpu.cpp), else recomputed
    # exactly as in the forward (ε regenerated from (seed, offset + i) or re-read); a = ∂L/∂log p_g, b = ∂L/∂H_g:
    #   ∂log p/∂z_j = −2·within·(z_j − z̄) − (2·mean/J)·z̄   (grouped; Σ_j (z_j − z̄) = 0 removes the z̄ path of S_w)
    #               = −2·within·z_j                        (standard)
    #   dz_total = dz + a·∂log p/∂z;  dμ = dz_total;  dlogvar = dz_total·ε·½exp(½ logvar) + ½b = ½·dz_total·t + ½b
    acc_dtype = coef_ptr.dtype.element_ty
    group = tl.program_id(0).to(tl.int64)
    views = tl.arange(0, BLOCK_J)[:, None]
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    mask = (views < J) & (dims < D)
    index = group * J * D + views * D + dims
    mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(acc_dtype)
    grad_z = tl.load(grad_z_ptr + index, mask=mask, other=0.0).to(acc_dtype)
    if Z_SAVED:
        z = tl.load(saved_z_ptr + index, mask=mask, other=0.0).to(acc_dtype)
        t = z - mu
    else:
        logvar = tl.load(logvar_ptr + index, mask=mask, other=0.0).to(acc_dtype)
        if EPS_GIVEN:
            eps = tl.load(eps_ptr + index, mask=mask, other=0.0).to(acc_dtype)
        else:
            eps = tl.randn(seed, offset + index).to(acc_dtype)
        t = tl.exp(0.5 * logvar) * eps
        z = tl.where(mask, mu + t, 0.0)
    a = tl.load(grad_log_prior_ptr + group).to(acc_dtype)
    half_b = 0.5 * tl.load(grad_entropy_ptr + group).to(acc_dtype)
    within = tl.load(coef_ptr)
    if GROUPED:
        z_bar = (tl.sum(z, axis=0) / J)[None, :]
        d_prior = -2.0 * within * (z - z_bar) - (2.0 * tl.load(coef_ptr + 1) / J) * z_bar
    else:
        d_prior = -2.0 * within * z
    total = grad_z + a * d_prior
    tl.store(grad_mu_ptr + index, total.to(grad_mu_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_logvar_ptr + index, (0.5 * total * t + half_b).to(grad_logvar_ptr.dtype.element_ty), mask=mask)


def prior_coefficients(prior, sigma2, views, dims):
    """(grouped, within, mean, log_prior_const, entropy_const): the Python twin of csrc/latent_prior.h."""
    two_pi = 2.0 * math.pi
    entropy_const = 0.5 * views * dims * (1.0 + math.log(two_pi))
    if prior == "standard":
        return False, 0.5, 0.0, -0.5 * views * dims * math.log(two_pi), entropy_const
    within = 0.5 / sigma2
    if prior == "official":
        return True, within, 0.5, 0.0, entropy_const
    log_norm = -0.5 * (views - 1) * dims * math.log(two_pi * sigma2) - 0.5 * dims * math.log(views)
    if prior == "flat":
        return True, within, 0.0, log_norm, entropy_const
    v = 1.0 + sigma2 / views
    return True, within, 0.5 / v, log_norm - 0.5 * dims * math.log(two_pi * v), entropy_const


@functools.lru_cache(maxsize=64)
def _coefficient_tensor(prior, sigma2, views, dims, dtype, device):
    """The per-call constants as a device tensor, cached so repeated calls make no host-to-device copy."""
    _, *values = prior_coefficients(prior, sigma2, views, dims)
    return torch.tensor(values, dtype=dtype, device=device)


def _blocks(views, dims):
    block_j = triton.next_power_of_2(max(views, 1))
    block_d = min(triton.next_power_of_2(max(dims, 1)), max(1, MAX_TILE // block_j))
    return block_j, block_d


def latent_forward(mu, logvar, eps, seed, offset, sigma2, prior):
    """Launch the forward: (z [G,J,D] in mu's dtype, log_prior [G], entropy [G] in the accumulation dtype)."""
    mu, logvar = mu.contiguous(), logvar.contiguous()
    eps = None if eps is None else eps.contiguous()
    G, J, D = mu.shape
    acc = accumulation_dtype(mu.dtype)
    z = torch.empty_like(mu)
    log_prior = torch.empty(G, dtype=acc, device=mu.device)
    entropy = torch.empty(G, dtype=acc, device=mu.device)
    grouped, _, _, log_prior_const, entropy_const = prior_coefficients(prior, sigma2, J, D)
    if G == 0 or D == 0:  # no launch: the sums are empty, each group gets the constants (0 when D = 0)
        return z, log_prior.fill_(log_prior_const), entropy.fill_(entropy_const)
    block_j, block_d = _blocks(J, D)
    with device_guard(mu):
        _latent_forward_kernel[(G,)](
            mu, logvar, mu if eps is None else eps, z, log_prior, entropy,
            _coefficient_tensor(prior, sigma2, J, D, acc, mu.device),
            seed, offset, J, D,
            GROUPED=grouped, EPS_GIVEN=eps is not None, BLOCK_J=block_j, BLOCK_D=block_d,
        )
    return z, log_prior, entropy


def latent_backward(grad_z, grad_log_prior, grad_entropy, mu, logvar, eps, z, seed, offset, sigma2, prior):
    """Launch the backward: (grad_mu, grad_logvar), both [G,J,D] in mu's dtype; z: the forward's z or None."""
    mu, logvar = mu.contiguous(), logvar.contiguous()
    eps = None if eps is None else eps.contiguous()
    z = None if z is None else z.contiguous()
    grad_z = grad_z.to(mu.dtype).contiguous()
    G, J, D = mu.shape
    acc = accumulation_dtype(mu.dtype)
    grad_log_prior = grad_log_prior.to(acc).contiguous()
    grad_entropy = grad_entropy.to(acc).contiguous()
    grad_mu, grad_logvar = torch.empty_like(mu), torch.empty_like(mu)
    if mu.numel() == 0:
        return grad_mu, grad_logvar
    grouped = prior_coefficients(prior, sigma2, J, D)[0]
    block_j, block_d = _blocks(J, D)
    with device_guard(mu):
        _latent_backward_kernel[(G, triton.cdiv(D, block_d))](
            grad_z, grad_log_prior, grad_entropy, mu, logvar, mu if eps is None else eps, mu if z is None else z,
            grad_mu, grad_logvar, _coefficient_tensor(prior, sigma2, J, D, acc, mu.device),
            seed, offset, J, D,
            GROUPED=grouped, EPS_GIVEN=eps is not None, Z_SAVED=z is not None, BLOCK_J=block_j,
            BLOCK_D=block_d,
        )
    return grad_mu, grad_logvar
