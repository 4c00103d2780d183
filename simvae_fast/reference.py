"""Pure-PyTorch reference of the SimVAE math: the single source of truth.

One function per formula of docs/math.md. Latents are [G groups, J views, D dims].
Every fused kernel is tested against these functions in float64, and the benchmarks time them as the
"reference" (eager) and "compile" (torch.compile) providers. Readability beats speed here.
"""
import math

import torch
import torch.nn.functional as F

from simvae_fast._checks import (
    check_choice,
    check_latent,
    check_positive,
    check_prior_views,
    check_same_latents,
)

PRIORS = ("gaussian", "flat", "official", "standard")
POSITIVES = ("mean", "logsumexp")
REDUCTIONS = ("mean", "sum", "none")
LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps (docs/math.md §3)."""
    check_same_latents(mu=mu, logvar=logvar, eps=eps)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_entropy(logvar):
    """H[q] = 1/2 * sum over views and dims of (1 + log 2pi + logvar) -> [G] (docs/math.md §3)."""
    check_latent("logvar", logvar)
    return 0.5 * (1.0 + LOG_2PI + logvar).sum(dim=(1, 2))


def grouped_prior_log_prob(z, sigma2=0.15, prior="gaussian"):
    """log p(z_1..z_J) per group -> [G], with every constant of docs/math.md §2.

    gaussian: y ~ N(0, I) integrated out; flat: improper uniform p(y); official: the official code's
    y = mean of the views with constants dropped; standard: J independent N(0, I) (the VAE baseline).
    """
    check_latent("z", z)
    check_choice("prior", prior, PRIORS)
    check_positive("sigma2", sigma2)
    _, J, D = z.shape
    check_prior_views(prior, J)
    if prior == "standard":
        return (-0.5 * z.square() - 0.5 * LOG_2PI).sum(dim=(1, 2))

    z_bar = z.mean(dim=1)
    s_w = (z - z_bar[:, None, :]).square().sum(dim=(1, 2))
    within = -s_w / (2.0 * sigma2)
    if prior == "official":
        return within - 0.5 * z_bar.square().sum(dim=1)

    log_norm = -0.5 * (J - 1) * D * math.log(2.0 * math.pi * sigma2) - 0.5 * D * math.log(J)
    if prior == "flat":
        return within + log_norm
    v = 1.0 + sigma2 / J
    return within - z_bar.square().sum(dim=1) / (2.0 * v) + log_norm - 0.5 * D * math.log(2.0 * math.pi * v)


def info_nce(z, temperature=0.5, normalize=True, positives="mean", reduction="mean"):
    """InfoNCE / NT-Xent over groups of views (docs/math.md §4), built from the full N x N logits.

    Rows are the N = G*J views; the denominator runs over every other row; positives are the other
    views of the same group, averaged ("mean", SupCon L_out) or log-sum-exp'ed ("logsumexp", solo-learn).
    With normalize=True rows are L2-normalised (F.normalize: a zero row stays zero).
    """
    check_latent("z", z)
    check_positive("temperature", temperature)
    check_choice("positives", positives, POSITIVES)
    check_choice("reduction", reduction, REDUCTIONS)
    G, J, D = z.shape
    if J < 2:
        raise ValueError(f"z: expected J >= 2 views per group for info_nce, got shape {tuple(z.shape)}")
    rows = z.reshape(G * J, D)
    u = F.normalize(rows, dim=1) if normalize else rows
    logits = u @ u.T / temperature

    group = torch.arange(G * J, device=z.device) // J
    self_mask = torch.eye(G * J, dtype=torch.bool, device=z.device)
    positive_mask = (group[:, None] == group[None, :]) & ~self_mask
    log_denominator = logits.masked_fill(self_mask, -math.inf).logsumexp(dim=1)
    if positives == "mean":
        positive_term = logits.masked_fill(~positive_mask, 0.0).sum(dim=1) / (J - 1)
    else:
        positive_term = logits.masked_fill(~positive_mask, -math.inf).logsumexp(dim=1)
    loss = log_denominator - positive_term
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# --- Counter-based noise: Triton's tl.randn(seed, offset), written out in int64 torch arithmetic ---
_PHILOX_KEY_A, _PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
_PHILOX_ROUND_A, _PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
_MASK32 = 0xFFFFFFFF


def _mul_hi_lo(a, b):
    """(high, low) 32-bit halves of a * b for uint32 values held in int64, without int64 overflow."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    p_lo, p_hi = a * b_lo, a * b_hi  # each < 2**48
    high = (p_hi + (p_lo >> 16)) >> 16
    low = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    return high, low


def philox4x32(seed, counter):
    """Philox4x32-10 on counters (counter low 32 bits, counter high 32 bits, 0, 0), key (seed low, seed high).

    counter: an int64 tensor of non-negative counters. Returns the four uint32 outputs as int64 tensors.
    """
    c0, c1 = counter & _MASK32, (counter >> 32) & _MASK32
    c2 = torch.zeros_like(counter)
    c3 = torch.zeros_like(counter)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(torch.full_like(c2, _PHILOX_ROUND_B), c2)
        hi_a, lo_a = _mul_hi_lo(torch.full_like(c0, _PHILOX_ROUND_A), c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _PHILOX_KEY_A) & _MASK32, (k1 + _PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def uint32_to_uniform(x):
    """Triton's uint_to_uniform_float: reinterpret as int32, fold negatives with ~x, scale into [0, 1)."""
    signed = torch.where(x >= 2**31, x - 2**32, x)
    folded = torch.where(signed < 0, ~signed, signed)
    return folded.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)


def philox_randn(seed, offset, shape, device=None):
    """Standard normals equal to Triton's tl.randn(seed, offset + i) for element i of a row-major tensor.

    Box-Muller on the first two Philox outputs, in float32: r = sqrt(-2 log max(u1, 1e-7)), n = r cos(2 pi u2).
    """
    numel = math.prod(shape)
    counter = offset + torch.arange(numel, dtype=torch.int64, device=device)
    x0, x1, _, _ = philox4x32(seed, counter)
    u1 = uint32_to_uniform(x0).clamp_min(1.0e-7)
    theta = torch.tensor(6.283185307179586, dtype=torch.float32) * uint32_to_uniform(x1)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(theta)).reshape(shape)
