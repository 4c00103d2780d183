"""The three methods of the harness, each an nn.Module with one interface:

    forward(views [G, J, C, H, W], seed) -> (loss, parts)   loss to minimise, parts: {name: scalar tensor}
    PARTS                                                    the names of the parts, in order
    represent(images [B, C, H, W]) -> [B, D]                 the representation the probes read (mu, or h)
    reconstruct(images) -> images in [0, 1], or None         the decoder's output at z = mu

- simvae: encoder -> (mu, logvar) per view -> fused latent op (grouped-view prior "gaussian", "flat" or
  "official") -> decoder; loss SimVAELoss (negative ELBO, beta on the latent terms), with a Bernoulli likelihood
  on the decoder's logits or, as the official code for RGB images, a Gaussian one (fixed log-variance -4.6) on
  the sigmoid of its output.
- vae: the same network and loss on the same J views with the standard N(0, I) prior per view (the fused op's
  prior "standard"), the official baseline.
- simclr: encoder (D outputs, the representation h) -> projection head -> fused info_nce over the J views.

Reductions: "sum" over the batch (the official code's scale, which its learning rate and Adam eps were tuned for;
the default) or "mean" per view. The trainer logs per-view values either way.
"""
import torch
from torch import nn

from simvae_fast._checks import GROUP_PRIORS
from simvae_fast.contrastive import info_nce
from simvae_fast.functional import info_nce_loss
from simvae_fast.app.models import build_decoder, build_encoder, projection_head
from simvae_fast.nn import SimVAELoss

METHODS = ("simvae", "vae", "simclr")


class LatentVariableModel(nn.Module):
    """SimVAE, or with prior "standard" the VAE on J views."""

    PARTS = ("reconstruction", "entropy", "log_prior")

    def __init__(self, encoder, decoder, loss):
        super().__init__()
        self.encoder, self.decoder, self.loss = encoder, decoder, loss

    def encode(self, x):
        """x [B, C, H, W] -> mu, logvar [B, D]."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu.contiguous(), logvar.contiguous()

    def forward(self, views, seed, offset=0):
        """offset: the noise counter of the first latent element (a process's share of a distributed batch)."""
        groups, n_views = views.shape[:2]
        mu, logvar = (t.view(groups, n_views, -1) for t in self.encode(views.flatten(0, 1)))
        latent = self.loss.latent(mu, logvar, seed, offset)  # the one fused pass: z, log prior, entropy
        x_out = self.decode(latent.z.flatten(0, 1)).view_as(views)
        out = self.loss(views, x_out, mu, logvar, latent=latent)
        return out.loss, {"reconstruction": out.reconstruction, "entropy": out.entropy, "log_prior": out.log_prior}

    def decode(self, z):
        """The likelihood's parameter: logits (Bernoulli) or the mean, a sigmoid of the decoder's output
        (Gaussian)."""
        x_out = self.decoder(z)
        return x_out if self.loss.likelihood == "bernoulli" else torch.sigmoid(x_out)

    def represent(self, images):
        return self.encode(images)[0]

    def reconstruct(self, images):
        x_out = self.decode(self.represent(images))
        return torch.sigmoid(x_out) if self.loss.likelihood == "bernoulli" else x_out


class SimCLR(nn.Module):
    """gather_distributed=True (training under torch.distributed): this process's rows are the InfoNCE anchors
    and every process's rows the columns (functional.info_nce_loss); the loss is then this process's share,
    the mean or the sum over its own rows, which the trainer scales like the other methods' local losses."""

    PARTS = ()

    def __init__(self, encoder, head, temperature=0.5, reduction="sum", backend="auto", gather_distributed=False):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.temperature, self.reduction, self.backend = temperature, reduction, backend
        self.gather_distributed = gather_distributed

    def forward(self, views, seed=None, offset=0):
        """seed and offset are unused (SimCLR draws no noise): the interface of the methods."""
        groups, n_views = views.shape[:2]
        z = self.head(self.encoder(views.flatten(0, 1))).view(groups, n_views, -1)
        if not self.gather_distributed:
            return info_nce(z, temperature=self.temperature, reduction=self.reduction, backend=self.backend), {}
        loss = info_nce_loss(z, self.temperature, gather_distributed=True, backend=self.backend)  # mean, own rows
        return (loss * (groups * n_views) if self.reduction == "sum" else loss), {}

    def represent(self, images):
        return self.encoder(images)

    def reconstruct(self, images):
        return None


def build_method(method, *, image_shape, latent_dim=10, architecture="mlp", prior="gaussian", likelihood="bernoulli",
                 sigma2=0.15, beta=1.0, temperature=0.5, reduction="sum", backend="auto", gather_distributed=False):
    """The method's model. prior applies to simvae (vae always uses "standard"), likelihood to both; temperature
    and gather_distributed to simclr."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "simclr":
        encoder = build_encoder(architecture, image_shape, latent_dim)
        return SimCLR(encoder, projection_head(latent_dim), temperature, reduction, backend, gather_distributed)
    if method == "simvae" and prior not in GROUP_PRIORS:
        raise ValueError(f"prior: expected one of {', '.join(map(repr, GROUP_PRIORS))} for simvae, got {prior!r}")
    loss = SimVAELoss(sigma2=sigma2, prior=prior if method == "simvae" else "standard", beta=beta,
                      likelihood=likelihood, reduction=reduction, backend=backend)
    encoder = build_encoder(architecture, image_shape, 2 * latent_dim)
    return LatentVariableModel(encoder, build_decoder(architecture, latent_dim, image_shape), loss)
