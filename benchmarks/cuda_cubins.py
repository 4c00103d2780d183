"""Every csrc/cuda/*.cu compiled for sm_90 (`nvcc -cubin`, with torch's extension flags), and its kernels.

The .cu files include no torch header (they launch from raw pointers and a cudaStream_t), so plain nvcc builds
them against CPU torch. For each kernel in the cubin: its own name and template arguments (demangled with
c++filt), its SASS summary (sass.py) and the threads per block it declares (__launch_bounds__, from the ELF's
EIATTR_MAX_THREADS / EIATTR_REQNTID), 0 when it declares none, and the dynamic shared memory its launcher gives
it where that is a compile-time constant (dynamic_shared: the InfoNCE tile kernels; a cubin does not record it).
"""
import glob
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import sass

NVCC_FLAGS = ["-cubin", "-arch=sm_90", "-O3", "-lineinfo", "-std=c++17"]  # setup.py's nvcc flags, one arch


@dataclass
class CudaKernel:
    source: str  # relative to the repository root
    name: str
    template_args: list
    sass: sass.Sass
    threads: int
    dynamic_shared: int = 0  # bytes per block given at launch, where known (dynamic_shared below)


def nvcc():
    for path in (os.environ.get("NVCC"), "/usr/local/cuda/bin/nvcc"):
        if path and os.access(path, os.X_OK):
            return path
    return None


def demangle(names):
    done = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    return dict(zip(names, done.stdout.splitlines()))


def _top_level(text, char):
    """Indices of `char` in text outside <> and () (a "(" counts at the depth it opens)."""
    found, depth = [], 0
    for i, ch in enumerate(text):
        if ch == char and depth == 0:
            found.append(i)
        depth += (ch in "<(") - (ch in ">)")
    return found


def split_name(demangled):
    """'void ns::(anonymous namespace)::lse_kernel<__half, float>(__half const*, ...)'
    -> ('lse_kernel', ['__half', 'float']): the function's own name and its template arguments."""
    text = demangled.replace("(anonymous namespace)", "anonymous")
    head = text[:(_top_level(text, "(") or [len(text)])[0]].removeprefix("void ")
    args = []
    if head.endswith(">"):
        inner = head[head.index("<") + 1:-1]
        cuts = [-1] + _top_level(inner, ",") + [len(inner)]
        head, args = head[:head.index("<")], [inner[i + 1:j].strip() for i, j in zip(cuts, cuts[1:])]
    return head.rsplit("::", 1)[-1], args


_MAX_THREADS = re.compile(r"EIATTR_(?:MAX_THREADS|REQNTID)")


def launch_bounds(cubin):
    """{mangled function: threads per block} for the kernels that declare __launch_bounds__ (or reqntid)."""
    text = subprocess.run([sass.cuobjdump(), "-elf", cubin], capture_output=True, text=True, check=True).stdout
    bounds, current, pending = {}, None, False
    for line in text.splitlines():
        if line.startswith(".nv.info."):
            current, pending = line.split()[0][len(".nv.info."):], False
        elif line[:1] not in ("", "\t", " "):
            current = None
        elif current and _MAX_THREADS.search(line):
            pending = True
        elif current and pending and "Value:" in line:
            product = 1
            for value in line.split("Value:", 1)[1].split():
                product *= int(value, 16)
            bounds[current], pending = product, False
    return bounds


# The InfoNCE tile kernels' launch shared memory (csrc/cuda/info_nce.cu: forward_tiles_kernel<T, kDims> gets
# TileSmem<OperandOf<T>, kDims, false>::kBytes, backward_tiles_kernel<T, kDims, kSymmetric> gets
# TileSmem<OperandOf<T>, kDims, kSymmetric>::kBytes), read from the header by a small host program.
DYNAMIC_SHARED = {"forward_tiles_kernel": "TileSmem<{operand}, {1}, false>::kBytes",
                  "backward_tiles_kernel": "TileSmem<{operand}, {1}, {2}>::kBytes"}
OPERAND = {"__nv_bfloat16": "Bf16", "__half": "F16", "float": "Tf32"}  # info_nce.cu's OperandOf<T>


def dynamic_shared(kernels, include):
    """Sets k.dynamic_shared for the kernels named in DYNAMIC_SHARED: one g++ build and run of a program that
    includes csrc/cuda/info_nce_tiles.cuh (host-compilable: the CUDA host tests build it) and prints each size."""
    known = [k for k in kernels if k.name in DYNAMIC_SHARED]
    if not known:
        return []
    exprs = [DYNAMIC_SHARED[k.name].format(*k.template_args, operand=OPERAND[k.template_args[0]]) for k in known]
    program = "\n".join(['#include <cstdio>', '#include "cuda/exec_policy_host.h"', '#include "cuda/info_nce_tiles.cuh"',
                         "using namespace simvae::tiles;", "int main() {"]
                        + [f'  std::printf("%u\\n", unsigned({e}));' for e in exprs] + ["}"])
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = os.path.join(tmp, "smem.cpp"), os.path.join(tmp, "smem")
        with open(source, "w") as f:
            f.write(program + "\n")
        built = subprocess.run(["g++", "-std=c++17", "-I" + include, "-o", binary, source], capture_output=True, text=True)
        if built.returncode != 0:
            return [f"dynamic shared memory of the tile kernels: g++ failed: {built.stderr.strip()[-2000:]}"]
        sizes = subprocess.run([binary], capture_output=True, text=True, check=True).stdout.split()
    for k, size in zip(known, sizes):
        k.dynamic_shared = int(size)
    return []


def compile_all(include, root):
    """([CudaKernel] of every <root>/csrc/cuda/*.cu, [errors]): a missing nvcc or a failed compile is an error."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    sources = sorted(glob.glob(os.path.join(root, "csrc", "cuda", "*.cu")))
    compiler = nvcc()
    if compiler is None:
        return [], [f"nvcc not found (NVCC or /usr/local/cuda/bin/nvcc): {len(sources)} .cu files unchecked"]
    kernels, errors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sources:
            source = os.path.relpath(path, root)
            cubin = os.path.join(tmp, os.path.basename(path) + ".cubin")
            done = subprocess.run([compiler, *NVCC_FLAGS, *COMMON_NVCC_FLAGS, "-I" + include, "-o", cubin, path],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                errors.append(f"{source}: nvcc failed: {done.stderr.strip()[-2000:]}")
                continue
            summaries, bounds = sass.summarise(cubin), launch_bounds(cubin)
            names = demangle(list(summaries))
            for mangled, info in summaries.items():
                name, args = split_name(names[mangled])
                kernels.append(CudaKernel(source, name, args, info, bounds.get(mangled, 0)))
    return kernels, errors + dynamic_shared(kernels, include)


def version():
    compiler = nvcc()
    if compiler is None:
        return "no nvcc"
    match = re.search(r"release ([\d.]+)", subprocess.run([compiler, "--version"], capture_output=True,
                                                           text=True).stdout)
    return f"nvcc {match.group(1)}" if match else "nvcc"
