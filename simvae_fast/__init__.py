"""simvae_fast: fused kernels for SimVAE and contrastive self-supervised learning.

The library: reference (the math), latent / contrastive (the public ops, over ops/ and the kernels), functional
and nn (losses), backends. The training application (`simvae-fast`) lives in simvae_fast.app; its modules keep
their first import paths (`simvae_fast.data`, `simvae_fast.train`, ...: _AppAliases below).
"""
import importlib
import importlib.abc
import importlib.util
import sys

from simvae_fast import reference
from simvae_fast.backends import backends
from simvae_fast.contrastive import info_nce
from simvae_fast.latent import LatentOut, simvae_latent

__version__ = "0.1.0"
__all__ = ["LatentOut", "backends", "info_nce", "reference", "simvae_latent", "__version__"]

APP_MODULES = ("augment", "celeba", "cifar10", "cli", "data", "evaluate", "methods", "models", "probes", "resnet",
               "style", "train")


class _AppAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import simvae_fast.<name>` for an application module gives the module simvae_fast.app.<name> itself
    (one module object under both names: attributes set on one are seen through the other)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == __name__ and name in APP_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.app.{spec.name.rpartition('.')[2]}")

    def exec_module(self, module):
        pass  # already executed under its own name


sys.meta_path.append(_AppAliases())
