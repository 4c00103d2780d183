"""Loss modules: drop-in replacements for the losses of lightly and solo-learn, and SimVAE's loss.

Thin wrappers over simvae_fast.functional.
"""
import math

import torch
from torch import nn

from simvae_fast import functional
from simvae_fast._checks import check_choice, check_positive
from simvae_fast.latent import simvae_latent
from simvae_fast.reference import POSITIVES, PRIORS


class NTXentLoss(nn.Module):
    """lightly.loss.NTXentLoss without a memory bank: forward(out0, out1) -> SimCLR's NT-Xent, mean over the
    2B rows. Changing the import is the whole migration."""

    def __init__(self, temperature=0.5, memory_bank_size=0, gather_distributed=False):
        super().__init__()
        check_positive("temperature", temperature)
        if memory_bank_size not in (0, None):
            raise ValueError("memory_bank_size: simvae_fast's NTXentLoss has no memory bank; expected 0, got "
                             f"{memory_bank_size!r} (use lightly's NTXentLoss for a memory bank)")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, out0, out1):
        return functional.nt_xent_loss(out0, out1, self.temperature, self.gather_distributed)


class InfoNCELoss(nn.Module):
    """InfoNCE over groups of J views: forward(views) with views [G, J, D] or a list of J tensors [G, D].

    learnable_temperature=True learns log(temperature) as a parameter, starting from `temperature`.
    """

    def __init__(self, temperature=0.5, learnable_temperature=False, positives="mean", normalize=True,
                 gather_distributed=False):
        super().__init__()
        check_positive("temperature", temperature)
        check_choice("positives", positives, POSITIVES)
        self.learnable_temperature = learnable_temperature
        if learnable_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        else:
            self.temperature = temperature
        self.positives, self.normalize, self.gather_distributed = positives, normalize, gather_distributed

    def forward(self, views):
        temperature = self.log_temperature.exp() if self.learnable_temperature else self.temperature
        return functional.info_nce_loss(views, temperature, normalize=self.normalize, positives=self.positives,
                                        gather_distributed=self.gather_distributed)


class SimVAELoss(nn.Module):
    """Negative ELBO of SimVAE (prior "gaussian", "flat" or "official") or of the VAE on J views ("standard").

    forward(x, x_out, mu, logvar, seed=None, latent=None) -> SimVAELossOut(loss, reconstruction, entropy,
    log_prior); see functional.simvae_loss for shapes and reductions. In one fused pass: latent = loss.latent(mu,
    logvar, seed), decode latent.z, then loss(x, x_out, mu, logvar, latent=latent). Passing the same seed
    instead of latent gives the same values with a second pass of the fused op.
    """

    def __init__(self, sigma2=0.15, prior="gaussian", beta=1.0, likelihood="bernoulli", reduction="sum",
                 gaussian_logvar=functional.GAUSSIAN_LOGVAR, backend="auto"):
        super().__init__()
        check_positive("sigma2", sigma2)
        check_choice("prior", prior, PRIORS)
        check_choice("likelihood", likelihood, functional.LIKELIHOODS)
        check_choice("reduction", reduction, functional.LOSS_REDUCTIONS)
        self.sigma2, self.prior, self.beta = float(sigma2), prior, float(beta)
        self.likelihood, self.reduction, self.gaussian_logvar = likelihood, reduction, float(gaussian_logvar)
        self.backend = backend

    def latent(self, mu, logvar, seed=None, offset=0):
        """The fused op with this loss's prior: LatentOut(z, log_prior, entropy), z drawn with the noise of
        (seed, offset) (see simvae_latent)."""
        return simvae_latent(mu, logvar, sigma2=self.sigma2, prior=self.prior, seed=seed, offset=offset,
                             backend=self.backend)

    def forward(self, x, x_out, mu, logvar, seed=None, latent=None):
        return functional.simvae_loss(
            x, x_out, mu, logvar, seed=seed, latent=latent, sigma2=self.sigma2, prior=self.prior, beta=self.beta,
            likelihood=self.likelihood, reduction=self.reduction, gaussian_logvar=self.gaussian_logvar,
            backend=self.backend,
        )

    def extra_repr(self):
        return (f"sigma2={self.sigma2}, prior={self.prior!r}, beta={self.beta}, likelihood={self.likelihood!r}, "
                f"reduction={self.reduction!r}")
