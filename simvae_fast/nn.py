"""Loss modules (over simvae_fast.functional)."""
from torch import nn

from simvae_fast import functional
from simvae_fast._checks import check_choice, check_positive
from simvae_fast.latent import simvae_latent
from simvae_fast.reference import PRIORS


class SimVAELoss(nn.Module):
    """Negative ELBO of SimVAE (prior "gaussian", "flat" or "official") or of the VAE on J views ("standard").

    forward(x, x_out, mu, logvar, seed=None) -> SimVAELossOut(loss, reconstruction, entropy, log_prior);
    see functional.simvae_loss for shapes and reductions. Draw the decoder's z with sample(mu, logvar, seed) and
    pass the same seed to forward, so the latent terms are evaluated at that z.
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

    def sample(self, mu, logvar, seed):
        """z = mu + exp(logvar / 2) * eps with the counter-based noise of `seed` ([G, J, D])."""
        return simvae_latent(mu, logvar, sigma2=self.sigma2, prior=self.prior, seed=seed, backend=self.backend).z

    def forward(self, x, x_out, mu, logvar, seed=None):
        return functional.simvae_loss(
            x, x_out, mu, logvar, seed=seed, sigma2=self.sigma2, prior=self.prior, beta=self.beta,
            likelihood=self.likelihood, reduction=self.reduction, gaussian_logvar=self.gaussian_logvar,
            backend=self.backend,
        )

    def extra_repr(self):
        return (f"sigma2={self.sigma2}, prior={self.prior!r}, beta={self.beta}, likelihood={self.likelihood!r}, "
                f"reduction={self.reduction!r}")
