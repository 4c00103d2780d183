"""A stand-in Triton driver: kernels compile for an sm_90 GPU that is not there, and launching them does nothing.

With it active (and TRITON_INTERPRET unset), the package's launchers run unmodified on CPU tensors: every
`kernel[grid](...)` they make is specialised exactly as on a GPU (dtypes, 16-byte alignment and divisibility
of pointers and integers, constexprs, num_warps/num_stages) and compiled by Triton's NVIDIA backend for
GPUTarget("cuda", 90, 32) — ptxas from the Triton wheel makes the cubin — and then not launched. Each compiled
kernel is recorded, with the source function it came from, in `captured()`.

An autotuned kernel has every config compiled (each 'timed' at 1 ms). The device limits are an H100/H200's
(sm_90): 132 SMs, 227 KB of shared memory per block, 64K registers. The shared-memory limit Triton checks at
load time is lifted here (the checker reports it instead of Triton raising OutOfResources before the kernel
can be inspected).
"""
import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.compiler
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

TARGET = GPUTarget("cuda", 90, 32)
SM90 = {  # cudaDeviceProp of an H100 SXM / H200 (the same SM), in the keys Triton reads
    "max_shared_mem": 232448, "max_num_regs": 65536, "multiprocessor_count": 132, "warpSize": 32,
    "sm_clock_rate": 1980000, "mem_clock_rate": 2619000, "mem_bus_width": 6144,
}


@dataclass
class Compiled:
    """One compiled specialisation: the kernel's name and module, its CompiledKernel (asm, metadata, hash) and
    its constexprs by argument name."""
    name: str
    module: str
    kernel: object
    constexprs: dict


class _Utils:
    def get_device_properties(self, device):
        return dict(SM90, max_shared_mem=1 << 30)  # let every kernel load; the checker applies the real limit

    def load_binary(self, name, kernel, shared, device):
        return 0, 0, 0, 0, 1024  # module, function, n_regs, n_spills (read from the SASS instead), max threads

    def unload_module(self, module):
        pass


class _NoLaunch:
    """Records each launch (the compiled kernel's hash and grid) instead of launching."""

    def __init__(self, src, metadata):
        self.hash = metadata.hash

    def __call__(self, grid_x, grid_y, grid_z, *args, **kwargs):
        _LAUNCHES.append((self.hash, (grid_x, grid_y, grid_z)))


class StandInDriver:
    """The parts of triton.backends.driver.GPUDriver that compiling and 'launching' a JIT kernel touch."""

    utils = _Utils()
    launcher_cls = _NoLaunch

    def get_current_target(self):
        return TARGET

    def get_current_device(self):
        return 0

    def set_current_device(self, device):
        pass

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_capability(self, device=None):
        return (9, 0)

    def get_benchmarker(self):
        return _bench_by_compiling

    def map_python_to_cpp_type(self, ty):
        from triton.backends.nvidia.driver import ty_to_cpp
        return ty_to_cpp(ty)


def _bench_by_compiling(kernel_call, quantiles=None, **kwargs):
    """The autotuner's benchmark: runs (compiles, 'launches') the config and reports 1 ms for it. So every config
    of an autotuned kernel is compiled and checked, and the autotuner keeps its first (all tie)."""
    kernel_call()
    return [1.0] * len(quantiles) if quantiles else 1.0


_CAPTURED = []
_LAUNCHES = []


def captured():
    """Every kernel compiled while the stand-in driver was active, in compilation order."""
    return list(_CAPTURED)


def launches():
    """(compiled kernel hash, grid) of every launch since reset_launches()."""
    return list(_LAUNCHES)


def reset_launches():
    _LAUNCHES.clear()


def _recording_compile(compile_fn):
    def compile(src, target=None, options=None, **kwargs):
        kernel = compile_fn(src, target=target, options=options, **kwargs)
        fn = getattr(src, "fn", None)  # a JITFunction (ASTSource), absent when compiling IR text
        if fn is not None:
            names = fn.arg_names
            constexprs = {names[path[0]] if len(path) == 1 else str(path): value
                          for path, value in src.constants.items()}
            _CAPTURED.append(Compiled(fn.fn.__name__, fn.fn.__module__, kernel, constexprs))
        return kernel

    return compile


@contextlib.contextmanager
def active():
    """Make the stand-in driver Triton's active driver and record every compilation; restores both after.

    JITFunction binds `triton.compiler.compile` when a kernel is first called (create_binder), so the
    recording wrapper must be in place before the launchers' kernels are first called in this process."""
    original, previous = triton.compiler.compile, driver._active
    triton.compiler.compile = _recording_compile(original)
    driver.set_active(StandInDriver())
    try:
        yield
    finally:
        triton.compiler.compile = original
        driver._active = previous  # None: Triton picks its real driver again when next asked
