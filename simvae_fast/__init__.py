"""simvae_fast: fused kernels for SimVAE and contrastive self-supervised learning."""
from simvae_fast import reference
from simvae_fast.backends import backends
from simvae_fast.contrastive import info_nce
from simvae_fast.latent import LatentOut, simvae_latent

__version__ = "0.1.0"
__all__ = ["LatentOut", "backends", "info_nce", "reference", "simvae_latent", "__version__"]
