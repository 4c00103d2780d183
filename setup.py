"""Builds simvae_fast with its extension simvae_fast._C (C++ CPU kernels; CUDA kernels when possible).

Install torch first, then `pip install --no-build-isolation .` (see README.md).
SIMVAE_FAST_CUDA=1 forces the CUDA sources on, =0 off; by default they are built when torch has CUDA
(torch.version.cuda) and nvcc is found. SIMVAE_FAST_SANITIZE=1 builds the C++ sources with ASan + UBSan.
"""
import glob
import os

if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"  # the nvcc on PATH may be a wrapper torch can't follow
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # autodetection crashes without a GPU
os.environ.setdefault("MAX_JOBS", "2")

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def build_cuda():
    forced = os.environ.get("SIMVAE_FAST_CUDA")
    if forced in ("0", "1"):
        return forced == "1"
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def extension():
    sources = sorted(glob.glob("csrc/*.cpp"))
    cxx = ["-O3", "-g0", "-fopenmp"]  # the C++ standard is torch's choice (C++20 from torch 2.14)
    link = ["-fopenmp"]
    if os.environ.get("SIMVAE_FAST_SANITIZE") == "1":
        cxx = ["-O1", "-g", "-fopenmp", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        link += ["-fsanitize=address,undefined"]
    if not build_cuda():
        return cpp_extension.CppExtension(
            "simvae_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    sources += sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu"))
    return cpp_extension.CUDAExtension(
        "simvae_fast._C",
        sources,
        define_macros=[("SIMVAE_FAST_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=link,
    )


setup(
    packages=["simvae_fast", "simvae_fast.app", "simvae_fast.ops", "simvae_fast.kernels"],
    package_dir={"simvae_fast.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
