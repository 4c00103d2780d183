"""Functional losses over the fused ops, with the signatures of the libraries users already train with, and
SimVAE's negative ELBO.

Each is the functional twin of a module in simvae_fast.nn. simvae_loss (docs/math.md §1) computes the latent block
(sampling, entropy, grouped-view prior) with the fused op simvae_fast.simvae_latent; with prior="standard" it is
the VAE on J views.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from simvae_fast import reference
from simvae_fast._checks import check_choice
from simvae_fast.contrastive import info_nce
from simvae_fast.distributed import gather_rows, world_size
from simvae_fast.latent import simvae_latent


def _local_row_mean(z, temperature, normalize, positives, gather_distributed, backend):
    """Mean InfoNCE over this process's rows; with gather_distributed, against every process's rows."""
    if not gather_distributed or world_size() == 1:
        return info_nce(z, temperature=temperature, normalize=normalize, positives=positives, backend=backend)
    z_all, first_group = gather_rows(z)
    rows = info_nce(z_all, temperature=temperature, normalize=normalize, positives=positives,
                    reduction="none", backend=backend)
    views = z.shape[1]
    return rows[first_group * views:(first_group + z.shape[0]) * views].mean()


def info_nce_loss(views, temperature=0.5, *, normalize=True, positives="mean", gather_distributed=False,
                  backend="auto"):
    """InfoNCE over groups of views, mean over rows. `views`: [G, J, D], or a list of J tensors [G, D].

    With gather_distributed=True (torch.distributed initialised), this process's rows are the anchors and
    every process's rows the columns; parameters then get the single-process gradient under DDP.
    """
    if isinstance(views, (list, tuple)):
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in views]
        if len(set(shapes)) != 1 or not isinstance(views[0], torch.Tensor) or views[0].dim() != 2:
            raise ValueError(f"views: expected a list of J tensors of one shape [G, D], got {shapes}")
        views = torch.stack(list(views), dim=1)
    z = views
    return _local_row_mean(z, temperature, normalize, positives, gather_distributed, backend)


def nt_xent_loss(out0, out1, temperature=0.5, gather_distributed=False, backend="auto"):
    """SimCLR's NT-Xent with lightly's NTXentLoss semantics: rows of out0 and out1 [B, D] are normalised,
    each row's positive is its partner in the other tensor, its negatives every other row; mean over 2B rows."""
    for name, t in (("out0", out0), ("out1", out1)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name}: expected a tensor [batch, dim], got {getattr(t, 'shape', type(t).__name__)}")
    if out0.shape != out1.shape:
        raise ValueError(f"out1: expected the shape of out0 {tuple(out0.shape)}, got {tuple(out1.shape)}")
    z = torch.stack([out0, out1], dim=1)
    return _local_row_mean(z, temperature, True, "mean", gather_distributed, backend)


def simclr_loss_func(z, indexes, temperature=0.1, backend="auto"):
    """solo-learn's simclr_loss_func: rows of z [N, D] with equal `indexes` [N] are positives of each other
    (the log-sum-exp form), every other row a negative; mean over rows. Rows may come in any order, but every
    index must occur equally often. Gathers from every process when torch.distributed is initialised, as
    solo-learn does. No rows: NaN, the mean over zero rows (as torch's mean), with an empty gradient."""
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z: expected a tensor [N, dim], got {getattr(z, 'shape', type(z).__name__)}")
    if not isinstance(indexes, torch.Tensor) or indexes.shape != z.shape[:1]:
        raise ValueError(f"indexes: expected a tensor of shape [{z.shape[0]}], got "
                         f"{getattr(indexes, 'shape', type(indexes).__name__)}")
    z_all, first_row = gather_rows(z)
    indexes_all, _ = gather_rows(indexes)
    order = torch.argsort(indexes_all, stable=True)
    _, counts = torch.unique_consecutive(indexes_all[order], return_counts=True)
    views = int(counts[0]) if counts.numel() else 2  # no rows: no groups, any J >= 2 gives the empty result
    if bool((counts != views).any()) or views < 2:
        raise ValueError("indexes: expected every index to occur equally often, at least twice (J views per "
                         f"datum), got occurrence counts {sorted(set(counts.tolist()))}")
    grouped = z_all[order].reshape(-1, views, z.shape[1])
    rows_sorted = info_nce(grouped, temperature=temperature, positives="logsumexp", reduction="none",
                           backend=backend)
    rows = torch.empty_like(rows_sorted).scatter(0, order, rows_sorted)
    return rows[first_row:first_row + z.shape[0]].mean()


# --- SimVAE ---

LIKELIHOODS = ("bernoulli", "gaussian")
LOSS_REDUCTIONS = ("sum", "mean")
GAUSSIAN_LOGVAR = -4.6  # the official fixed log-variance of the Gaussian likelihood on RGB images


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
    dtype = torch.promote_types(x_out.dtype, torch.float32)  # half-precision decoder outputs are summed in float32
    x, x_out = x.to(dtype), x_out.to(dtype)
    if likelihood == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(x_out, x, reduction="none")
    else:
        per_pixel = -0.5 * ((x - x_out).square() * math.exp(-gaussian_logvar) + gaussian_logvar + reference.LOG_2PI)
    return per_pixel.flatten(1).sum(dim=1)


def simvae_loss(x, x_out, mu, logvar, *, seed=None, latent=None, sigma2=0.15, prior="gaussian", beta=1.0,
                likelihood="bernoulli", reduction="sum", gaussian_logvar=GAUSSIAN_LOGVAR, backend="auto"):
    """Negative ELBO of SimVAE and its parts, one reparameterised sample per view.

    x: the views [G, J, C, H, W]; x_out: the decoder's output for them (logits, or means for "gaussian"), same
    shape; mu, logvar: the encoder's [G, J, D]. latent: the LatentOut of the one fused call whose z the decoder
    was given (latent = simvae_latent(mu, logvar, seed=...)): its entropy and log prior are used as they are.
    Without it, seed: the counter-based noise seed the decoder's z was drawn with; the fused op runs again with
    it, so the latent terms are evaluated at that same z (seed=None draws a fresh one, an independent sample:
    still an unbiased estimate of the ELBO and its gradient, with more variance).
    beta weighs the latent terms (entropy + log prior). reduction: "sum" over groups (the official code's, and
    the scale its learning rate and Adam eps were tuned for) or "mean" per view (divided by G * J).
    """
    check_choice("likelihood", likelihood, LIKELIHOODS)
    check_choice("reduction", reduction, LOSS_REDUCTIONS)
    if x.shape != x_out.shape:
        raise ValueError(f"x_out: expected the shape of x {tuple(x.shape)}, got {tuple(x_out.shape)}")
    if x.dim() < 3 or x.shape[:2] != mu.shape[:2]:
        raise ValueError(f"x: expected [G, J, ...] with (G, J) = {tuple(mu.shape[:2])} of mu, got {tuple(x.shape)}")
    if latent is None:
        latent = simvae_latent(mu, logvar, sigma2=sigma2, prior=prior, seed=seed, backend=backend)
    parts = (log_likelihood(x, x_out, likelihood, gaussian_logvar), latent.entropy, latent.log_prior)
    views = 1 if reduction == "sum" else mu.shape[0] * mu.shape[1]  # "mean" over zero views is NaN, as in torch
    reconstruction, entropy, log_prior = (part.sum() / views for part in parts)
    loss = -(reconstruction + beta * (entropy + log_prior))
    return SimVAELossOut(loss, reconstruction, entropy, log_prior)
