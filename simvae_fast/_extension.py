"""The C++ extensions, loaded once at `import simvae_fast`, and why a backend that needs one is not usable.

    simvae_fast._C       the op schemas and the CPU kernels (latent op and InfoNCE), on the LibTorch stable ABI:
                         one build loads into every torch >= its target (2.10) and every Python >= 3.10.
    simvae_fast._C_cuda  the CUDA kernels, imported only when the running torch has CUDA. Its registrations are
                         on the ATen C++ API (csrc/module_cuda.cpp says why), so it loads only into the torch it
                         was built against; it is not even imported into another one.

A module that was built but does not import, or a CUDA torch without the CUDA module, is reported once, by
an ExtensionWarning at import: what failed, the torch the build used and the one running, and the command
that fixes it. The backends that need the module then say why they are unusable (simvae_fast.backends(),
`simvae-fast info`); _build_info.json, written by setup.py beside the modules, says how they were built.
"""
import importlib
import importlib.util
import json
import os
import warnings
from typing import NamedTuple, Optional

import torch

MODULES = ("_C", "_C_cuda")
# What each backend needs, in load order (_C defines the schemas _C_cuda registers into).
NEEDS = {"cpu": ("_C",), "cuda": ("_C", "_C_cuda")}
# _C_cuda built against the running torch (pip's isolated build would take the newest torch instead).
REBUILD = "pip install --no-build-isolation .  (from the source checkout, after installing torch)"
REINSTALL = "pip install --force-reinstall --no-deps .  (from the source checkout)"
BUILD_INFO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_info.json")


class ExtensionWarning(RuntimeWarning):
    """A C++ extension of simvae_fast was built but cannot be used with the running torch."""


class Loaded(NamedTuple):
    module: Optional[object]  # the imported module, or None
    reason: str  # "loaded", or why not


def build_info():
    """How the extensions were built (setup.py's _build_info.json), or None for a tree that was never built."""
    try:
        with open(BUILD_INFO) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _version_tuple(version):
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


def _failure(name, err, info):
    """Why module `name` did not import, and the command that fixes it."""
    built_with = info["torch"] if info else "an unknown torch"
    what = f"simvae_fast.{name} not importable ({err}); built against torch {built_with}, running {torch.__version__}"
    if name == "_C" and info and _version_tuple(torch.__version__) < _version_tuple(info["stable_abi_target"]):
        return what, f"pip install 'torch>={info['stable_abi_target']}'"
    if name == "_C":  # stable ABI: any torch >= the target loads it, so the files themselves are broken
        return what, REINSTALL
    return what, REBUILD


def _load(name, info, loaded):
    """(Loaded, warning text or None) for module `name`, after the modules before it in MODULES."""
    if name == "_C_cuda" and torch.version.cuda is None:
        return Loaded(None, "the running torch has no CUDA"), None
    if name != "_C" and loaded["_C"].module is None:
        return Loaded(None, "simvae_fast._C (the op schemas) did not load"), None
    if name != "_C" and info is not None and info["torch"] != torch.__version__ and name in info["modules"]:
        # Not even imported: a module on the ATen C++ API may crash the process when loaded into another torch.
        what = (f"simvae_fast.{name} was built against torch {info['torch']}, running {torch.__version__} "
                "(its ATen C++ API loads only into the torch it was built against)")
        return Loaded(None, what), (what, REBUILD)
    if importlib.util.find_spec(f"simvae_fast.{name}") is None:
        if info is None:
            reason = f"simvae_fast.{name} is not built (no build of the C++ extensions beside {__name__})"
            return Loaded(None, reason), (reason, "pip install .")
        if name != "_C_cuda":
            reason = f"simvae_fast.{name} is missing from the build beside {__name__}"
            return Loaded(None, reason), (reason, REINSTALL)
        why = (f"its build failed: {info['cuda_build_error']}" if info.get("cuda_build_error")
               else f"the build's torch {info['torch']} had no CUDA, or nvcc was not found")
        reason = f"simvae_fast._C_cuda was not built ({why})"
        return Loaded(None, reason), (reason, f"SIMVAE_FAST_CUDA=1 {REBUILD}")
    try:
        return Loaded(importlib.import_module(f"simvae_fast.{name}"), "loaded"), None
    except ImportError as err:
        what, fix = _failure(name, err, info)
        return Loaded(None, what), (what, fix)


def _load_all():
    info, loaded, problems = build_info(), {}, []
    for name in MODULES:
        loaded[name], problem = _load(name, info, loaded)
        if problem:
            problems.append(problem)
    if problems:
        lines = "\n".join(f"  {what}\n    fix: {fix}" for what, fix in problems)
        warnings.warn(f"simvae_fast: C++ kernels unavailable, their backends will not run:\n{lines}",
                      ExtensionWarning, stacklevel=3)
    return loaded


LOADED = _load_all()


def availability(backend):
    """(usable, reason) of the extension's backend "cpu" or "cuda"."""
    for name in NEEDS[backend]:
        if LOADED[name].module is None:
            return False, LOADED[name].reason
    if backend == "cuda" and not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, "C++ extension loaded" if backend == "cpu" else "extension built with CUDA"
