"""`simvae-fast info` (and `python -m simvae_fast info`): what is installed, how the C++ extensions were built,
and which backends are usable here, with the reason for each — the first thing to run when a kernel does not
load, and what a bug report should include.
"""
import importlib.metadata
import os
import platform
import sys

import torch

import simvae_fast
from simvae_fast import _extension
from simvae_fast.backends import backends

# How each module is bound to torch and Python, given the build's _build_info.json.
ABI = {
    "_C": lambda b: f"LibTorch stable ABI (loads into torch >= {b['stable_abi_target']}), CPython limited API "
                    f"(Python >= {b['python_limited_api'][2]}.{b['python_limited_api'][3:]})",
    "_C_cuda": lambda b: f"ATen C++ API (loads only into torch {b['torch']}); CUDA {b['torch_cuda']}, "
                         f"arch list {b['cuda_arch_list']}, {b['nvcc']}",
}


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _torch_line():
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
    devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no CUDA device"
    return (f"{torch.__version__} ({cuda}; {devices}; C++11 ABI {int(torch._C._GLIBCXX_USE_CXX11_ABI)}; "
            f"{torch.get_num_threads()} CPU threads)")


def report():
    """The lines `info` prints."""
    lines = [
        f"simvae_fast {simvae_fast.__version__} at {os.path.dirname(os.path.abspath(simvae_fast.__file__))}",
        f"Python      {platform.python_version()} ({platform.python_implementation()}, {platform.machine()})",
        f"torch       {_torch_line()}",
        f"Triton      {_version('triton')}",
    ]
    build = _extension.build_info()
    if build is None:
        lines.append("extensions  not built (no _build_info.json beside the package)")
    else:
        lines += [
            f"built with  torch {build['torch']}" + (f" (CUDA {build['torch_cuda']})" if build["torch_cuda"] else "")
            + f", {build['compiler']}, C++11 ABI {int(build['cxx11_abi'])}"
            + (", ASan + UBSan" if build["sanitize"] else ""),
            "extensions  " + ", ".join(build["modules"]) + " built",
        ]
    for name in _extension.MODULES:
        loaded = _extension.LOADED[name]
        how = f"; {ABI[name](build)}" if build and name in build["modules"] else ""
        lines.append(f"  {name:8}  {loaded.reason}{how}")
    lines.append("backends")
    for name, (usable, reason) in backends().items():
        lines.append(f"  {name:9} {'usable' if usable else 'not usable'}: {reason}")
    return lines


def run(args=None):
    print("\n".join(report()))
    return 0


def add_command(commands):
    """Adds `info` to the simvae-fast command line (cli.py's subparsers)."""
    p = commands.add_parser("info", help="versions, how the extensions were built, which backends are usable")
    p.set_defaults(handler=run)


if __name__ == "__main__":
    sys.exit(run())
