"""Losses as functions of tensors (the modules in simvae_fast.nn wrap them).

simvae_loss: the negative ELBO of SimVAE (math doc §1), with the latent block (sampling, entropy, grouped-view
prior) computed by the fused op simvae_fast.simvae_latent. With prior="standard" it is the VAE on J views.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from simvae_fast._checks import check_choice
from simvae_fast.latent import simvae_latent

LIKELIHOODS = ("bernoulli", "gaussian")
LOSS_REDUCTIONS = ("sum", "mean")
GAUSSIAN_LOGVAR = -4.6  # the official fixed log-variance of the Gaussian likelihood on RGB images
LOG_2PI = math.log(2.0 * math.pi)


class SimVAELossOut(NamedTuple):
    loss: torch.Tensor  # -(reconstruction + beta * (entropy + log_prior)), reduced
    reconstruction: torch.Tensor  # sum over views of E_q log p(x_j | z_j), reduced
    entropy: torch.Tensor  # sum over views of H[q(z_j | x_j)], reduced
    log_prior: torch.Tensor  # E_q log p(z_1..z_J), reduced


def log_likelihood(x, x_out, likelihood="bernoulli", gaussian_logvar=GAUSSIAN_LOGVAR):
    """log p(x | z) per group [G], summed over views and pixels; x, x_out: [G, J, ...].

    bernoulli: x_out are logits, log p = x log sigmoid(l) + (1 - x) log sigmoid(-l) (x in [0, 1]).
    gaussian: x_out is the mean, variance exp(gaussian_logvar) fixed.
    """
    x_out = x_out.float()
    if likelihood == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(x_out, x.float(), reduction="none")
    else:
        per_pixel = -0.5 * ((x.float() - x_out).square() * math.exp(-gaussian_logvar) + gaussian_logvar + LOG_2PI)
    return per_pixel.flatten(1).sum(dim=1)


def simvae_loss(x, x_out, mu, logvar, *, seed=None, sigma2=0.15, prior="gaussian", beta=1.0,
                likelihood="bernoulli", reduction="sum", gaussian_logvar=GAUSSIAN_LOGVAR, backend="auto"):
    """Negative ELBO of SimVAE and its parts, one reparameterised sample per view.

    x: the views [G, J, C, H, W]; x_out: the decoder's output for them (logits, or means for "gaussian"), same
    shape; mu, logvar: the encoder's [G, J, D]. seed: the counter-based noise seed the decoder's z was drawn with
    (z = simvae_latent(mu, logvar, seed=seed).z): the entropy and log prior are evaluated at that same z (the
    noise is regenerated from the seed). seed=None draws a fresh one, an independent sample: still an unbiased
    estimate of the ELBO and its gradient, with more variance.
    beta weighs the latent terms (entropy + log prior). reduction: "sum" over groups (the official code's, and
    the scale its learning rate and Adam eps were tuned for) or "mean" per view (divided by G * J).
    """
    check_choice("likelihood", likelihood, LIKELIHOODS)
    check_choice("reduction", reduction, LOSS_REDUCTIONS)
    if x.shape != x_out.shape:
        raise ValueError(f"x_out: expected the shape of x {tuple(x.shape)}, got {tuple(x_out.shape)}")
    if x.dim() < 3 or x.shape[:2] != mu.shape[:2]:
        raise ValueError(f"x: expected [G, J, ...] with (G, J) = {tuple(mu.shape[:2])} of mu, got {tuple(x.shape)}")
    latent = simvae_latent(mu, logvar, sigma2=sigma2, prior=prior, seed=seed, backend=backend)
    parts = (log_likelihood(x, x_out, likelihood, gaussian_logvar), latent.entropy, latent.log_prior)
    scale = 1.0 if reduction == "sum" else 1.0 / (mu.shape[0] * mu.shape[1])
    reconstruction, entropy, log_prior = (part.sum() * scale for part in parts)
    loss = -(reconstruction + beta * (entropy + log_prior))
    return SimVAELossOut(loss, reconstruction, entropy, log_prior)
