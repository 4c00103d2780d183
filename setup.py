"""Builds simvae_fast and its C++ extensions; `pip install .` works as it is (README.md: install).

simvae_fast._C       the op schemas and the CPU kernels on the LibTorch stable ABI (TORCH_TARGET_VERSION below)
                     and CPython's limited API: loads into every torch >= 2.10 and every Python >= 3.10, whatever
                     torch the (isolated) build environment had.
simvae_fast._C_aten  the CPU kernels still on the ATen C++ API (InfoNCE, until #16 phase 2): loads only into
                     the torch it was built against.
simvae_fast._C_cuda  the CUDA kernels, built when the build's torch has CUDA (torch.version.cuda) and nvcc is
                     found; simvae_fast imports it only when the running torch has CUDA.
SIMVAE_FAST_CUDA=1 forces the CUDA module on, =0 off. SIMVAE_FAST_SANITIZE=1 builds with ASan + UBSan.
The build writes simvae_fast/_build_info.json beside the modules (what `simvae-fast info` prints).
"""
import glob
import json
import os
import subprocess

if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"  # the nvcc on PATH may be a wrapper torch can't follow
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # autodetection crashes without a GPU
os.environ.setdefault("MAX_JOBS", "2")

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

STABLE_TARGET = (2, 10)  # the oldest torch simvae_fast._C loads into (TORCH_TARGET_VERSION)
PYTHON_LIMITED_API = "cp310"  # the oldest Python (CPython's limited API: one binary for 3.10 and later)
SOURCES = {
    "_C": ["csrc/module.cpp", "csrc/latent_cpu.cpp"],
    "_C_aten": ["csrc/module_aten.cpp", "csrc/info_nce_cpu.cpp"],
    "_C_cuda": ["csrc/module_cuda.cpp"] + sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu")),
}


def build_cuda():
    forced = os.environ.get("SIMVAE_FAST_CUDA")
    if forced in ("0", "1"):
        return forced == "1"
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def compile_flags(openmp):
    """(compile, link) flags. openmp: "-fopenmp" where ATen's inline at::parallel_for needs the OpenMP runtime,
    "-fopenmp-simd" on the stable ABI, whose parallel_for runs inside libtorch (only `omp simd` is used here)."""
    link = ["-fopenmp"] if openmp == "-fopenmp" else []
    if os.environ.get("SIMVAE_FAST_SANITIZE") == "1":
        sanitize = ["-fsanitize=address,undefined"]
        return ["-O1", "-g", openmp, "-fno-omit-frame-pointer"] + sanitize, link + sanitize
    return ["-O3", "-g0", openmp], link  # the C++ standard is torch's choice (C++20 from torch 2.14)


def extensions():
    stable_cxx, stable_link = compile_flags("-fopenmp-simd")
    cxx, link = compile_flags("-fopenmp")
    major, minor = STABLE_TARGET
    target = f"0x{major:02x}{minor:02x}000000000000"
    result = [
        cpp_extension.CppExtension("simvae_fast._C", SOURCES["_C"], py_limited_api=True,
                                   define_macros=[("TORCH_TARGET_VERSION", target)],
                                   extra_compile_args={"cxx": stable_cxx}, extra_link_args=stable_link),
        cpp_extension.CppExtension("simvae_fast._C_aten", SOURCES["_C_aten"], py_limited_api=True,
                                   extra_compile_args={"cxx": cxx}, extra_link_args=link),
    ]
    if build_cuda():
        result.append(cpp_extension.CUDAExtension("simvae_fast._C_cuda", SOURCES["_C_cuda"], py_limited_api=True,
                                                  extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
                                                  extra_link_args=link))
    return result


def output_line(command, contains=""):
    """The first line of a command's output that contains `contains`, or None when it can't run."""
    try:
        lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    return next((line.strip() for line in lines if contains in line), None)


class BuildExtension(cpp_extension.BuildExtension):
    """torch's build_ext, then _build_info.json beside the modules: how they were built."""

    def run(self):
        # A module file of an earlier build under another suffix (_C.cpython-311-*.so before the abi3 build)
        # would be imported instead of the new one: remove it.
        for ext in self.extensions:
            target = self.get_ext_fullpath(ext.name)
            for stale in glob.glob(os.path.join(os.path.dirname(target), ext.name.rsplit(".", 1)[1] + ".*.so")):
                if os.path.abspath(stale) != os.path.abspath(target):
                    os.remove(stale)
        super().run()
        names = [ext.name.rsplit(".", 1)[1] for ext in self.extensions]
        info = {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
            "compiler": output_line([os.environ.get("CXX", "c++"), "--version"]),
            "stable_abi_target": ".".join(map(str, STABLE_TARGET)),
            "python_limited_api": PYTHON_LIMITED_API,
            "sanitize": os.environ.get("SIMVAE_FAST_SANITIZE") == "1",
            "modules": names,
            "cuda_arch_list": os.environ["TORCH_CUDA_ARCH_LIST"] if "_C_cuda" in names else None,
            "nvcc": output_line([os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"), "--version"], "release")
            if "_C_cuda" in names else None,
        }
        path = os.path.join(os.path.dirname(self.get_ext_fullpath("simvae_fast._C")), "_build_info.json")
        with open(path, "w") as f:
            json.dump(info, f, indent=1)


setup(
    packages=["simvae_fast", "simvae_fast.app", "simvae_fast.ops", "simvae_fast.kernels"],
    package_dir={"simvae_fast.kernels": "kernels"},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": PYTHON_LIMITED_API}},
)
