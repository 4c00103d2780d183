"""Builds simvae_fast and its C++ extensions; `pip install .` works as it is (README.md: install).

simvae_fast._C       the op schemas and the CPU kernels (latent op, InfoNCE) on the LibTorch stable ABI
                     (TORCH_TARGET_VERSION below) and CPython's limited API: loads into every torch >= 2.10 and
                     every Python >= 3.10, whatever torch the (isolated) build environment had.
simvae_fast._C_cuda  the CUDA kernels (ATen C++ API: loads only into the torch it was built against), built when
                     the build's torch has CUDA (torch.version.cuda) and an nvcc of the same CUDA major is found;
                     simvae_fast imports it only when the running torch has CUDA. A failed CUDA build is reported
                     and left out, so the install and the CPU kernels still work (the error is recorded in
                     _build_info.json, and `import simvae_fast` under a CUDA torch names it).
SIMVAE_FAST_CUDA=1 forces the CUDA module on (its errors then fail the build), =0 off.
SIMVAE_FAST_SANITIZE=1 builds with ASan + UBSan.
The build writes simvae_fast/_build_info.json beside the modules (what `simvae-fast info` prints).
"""
import glob
import json
import os
import re
import subprocess
import sys

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
    "_C": ["csrc/module.cpp", "csrc/latent_cpu.cpp", "csrc/info_nce_cpu.cpp"],
    "_C_cuda": ["csrc/module_cuda.cpp"] + sorted(glob.glob("csrc/cuda/*.cpp") + glob.glob("csrc/cuda/*.cu")),
}


CUDA_MODULE = "simvae_fast._C_cuda"


def build_cuda():
    forced = os.environ.get("SIMVAE_FAST_CUDA")
    if forced in ("0", "1"):
        return forced == "1"
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def cuda_forced():
    return os.environ.get("SIMVAE_FAST_CUDA") == "1"


def nvcc_problem():
    """Why the found nvcc cannot build for the build's torch (torch refuses another CUDA major), or None."""
    nvcc = os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    line = output_line([nvcc, "--version"], "release")
    found = re.search(r"release (\d+)\.(\d+)", line or "")
    if found is None:
        return f"{nvcc} --version gave no CUDA release"
    if found.group(1) != torch.version.cuda.split(".")[0]:
        return (f"nvcc {found.group(1)}.{found.group(2)} ({nvcc}) cannot build for the build's torch "
                f"{torch.__version__} (CUDA {torch.version.cuda})")
    return None


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
    """torch's build_ext, with a CUDA module whose build fails left out (unless forced), then _build_info.json
    beside the modules: how they were built."""

    cuda_build_error = None

    def skip_cuda(self, error):
        self.cuda_build_error = error
        self.extensions = [ext for ext in self.extensions if ext.name != CUDA_MODULE]
        old_build = self.get_ext_fullpath(CUDA_MODULE)  # an earlier build's module must not be imported instead
        if os.path.exists(old_build):
            os.remove(old_build)
        print(f"simvae_fast: {CUDA_MODULE} left out, its build failed: {error}\n"
              "  The CPU kernels are not affected. To build the CUDA kernels: a torch whose CUDA major matches nvcc's,"
              " then SIMVAE_FAST_CUDA=1 pip install --no-build-isolation .", file=sys.stderr)

    def build_extensions(self):
        # torch checks nvcc against its CUDA for all the extensions at once, before building any: check first.
        if not cuda_forced() and any(ext.name == CUDA_MODULE for ext in self.extensions):
            problem = nvcc_problem()
            if problem:
                self.skip_cuda(problem)
        super().build_extensions()

    def build_extension(self, ext):
        if ext.name != CUDA_MODULE or cuda_forced():
            return super().build_extension(ext)
        try:
            super().build_extension(ext)
        except Exception as err:  # a compiler or linker error, reported by skip_cuda: the CPU kernels stay built
            self.skip_cuda(str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)

    def run(self):
        # A module file of an earlier build under another suffix (_C.cpython-311-*.so before the abi3 build)
        # would be imported instead of the new one: remove it. So is a module no longer built (_C_aten, before
        # #16 phase 2), which the loader would otherwise find.
        package = os.path.dirname(self.get_ext_fullpath("simvae_fast._C"))
        wanted = {os.path.abspath(self.get_ext_fullpath(ext.name)) for ext in self.extensions}
        for stale in glob.glob(os.path.join(package, "_C*.so")):
            if os.path.abspath(stale) not in wanted:
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
            "cuda_build_error": self.cuda_build_error,
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
