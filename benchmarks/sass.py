"""What a cubin's SASS says about each kernel in it, read with cuobjdump (the one in the Triton wheel).

    summarise(cubin)    one Sass record per function, from one cuobjdump run:
      parse_resources     its --dump-resource-usage part: registers, stack (bytes of local-memory frame),
                          static shared memory
      parse_instructions  its -sass part: opcode counts (predicates dropped, modifiers kept: "MUFU.EX2",
                          "FFMA.FTZ", "HGMMA.64x64x16.F32.BF16", ...)
    blocks_per_sm(...)  resident blocks of one kernel on an sm_90 SM (the occupancy calculator's arithmetic)

Counted: HMMA (warp-level tensor-core matrix multiply-accumulate), HGMMA (sm_90 warpgroup wgmma), FFMA (fp32
fused multiply-add), MUFU.EX2 (the special-function unit's 2^x: each exp), STL/LDL (local-memory stores and
loads: register spills, or arrays the compiler could not keep in registers).
"""
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass

import triton

# sm_90 (H100/H200) per-SM limits, CUDA occupancy calculator / CUDA C Programming Guide, compute capability 9.0
SM90_REGISTERS = 65536
SM90_REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
SM90_MAX_WARPS = 64
SM90_MAX_BLOCKS = 32
SM90_SHARED_PER_SM = 233472  # 228 KB
SM90_SHARED_PER_BLOCK = 232448  # 227 KB: the most one block may use (opt-in)
SM90_SHARED_RESERVED = 1024  # per block, reserved by the system
SM90_SHARED_UNIT = 128


def cuobjdump():
    """The cuobjdump shipped in the Triton wheel, else one from the CUDA toolkit."""
    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    for path in (bundled, shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("cuobjdump: not in the Triton wheel (triton/backends/nvidia/bin), on PATH, "
                            "or in /usr/local/cuda/bin")


def _run(args, cubin):
    if isinstance(cubin, (bytes, bytearray)):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(cubin)
            f.flush()
            return _run(args, f.name)
    done = subprocess.run([cuobjdump(), *args, cubin], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cuobjdump {' '.join(args)} {cubin} failed: {done.stderr.strip()}")
    return done.stdout


_FUNCTION = re.compile(r"^\s*Function\s*:?\s*(\S+?):?\s*$")  # "Function f:" (resources), "Function : f" (sass)
_RESOURCE = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")


def parse_resources(text):
    """{function: {"REG": n, "STACK": n, "SHARED": n, "LOCAL": n}} from --dump-resource-usage output."""
    usage, name = {}, None
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match:
            name = match.group(1)
            continue
        fields = dict((k, int(v)) for k, v in _RESOURCE.findall(line))
        if name is not None and "REG" in fields:
            usage[name] = fields
            name = None
    return usage


_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)")


def parse_instructions(text):
    """{function: Counter(opcode with modifiers)} from cuobjdump -sass output."""
    counts, current = {}, None
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match:
            current = counts.setdefault(match.group(1), Counter())
            continue
        match = _INSTRUCTION.search(line)
        if current is not None and match:
            current[match.group(1)] += 1
    return counts


def _base(op):
    return op.split(".", 1)[0]


@dataclass
class Sass:
    function: str
    registers: int
    stack: int  # bytes of per-thread stack frame (local memory)
    static_shared: int  # bytes (dynamic shared memory is the launch's: Triton's metadata.shared)
    spill_stores: int  # STL
    spill_loads: int  # LDL
    hmma: int
    hgmma: int
    ffma: int
    mufu_ex2: int
    total: int  # instructions

    @property
    def spills(self):
        return self.stack > 0 or self.spill_stores > 0 or self.spill_loads > 0

    @property
    def tensor_core(self):
        return self.hmma + self.hgmma


def fold(function, usage, counts, reserve_counted=False):
    """reserve_counted: the cubin's SHARED figures include the system's per-block reserve (taken off here, so
    that static_shared is the kernel's own and blocks_per_sm adds the reserve once)."""
    bases = Counter()
    for op, n in counts.items():
        bases[_base(op)] += n
    shared = usage.get("SHARED", 0)
    if reserve_counted:
        shared = max(0, shared - SM90_SHARED_RESERVED)
    return Sass(function=function, registers=usage.get("REG", 0), stack=usage.get("STACK", 0),
                static_shared=shared, spill_stores=bases["STL"], spill_loads=bases["LDL"],
                hmma=bases["HMMA"], hgmma=bases["HGMMA"], ffma=bases["FFMA"],
                mufu_ex2=sum(n for op, n in counts.items() if op.startswith("MUFU.EX2")),
                total=sum(counts.values()))


def summarise(cubin):
    """{function: Sass} for every kernel in a cubin (bytes or a path): one cuobjdump run prints the resource
    usage, then the SASS."""
    text = _run(["--dump-resource-usage", "-sass"], cubin)
    usage, counts = parse_resources(text), parse_instructions(text)
    reserve = _reserve_counted(cubin)
    return {name: fold(name, usage.get(name, {}), counts.get(name, Counter()), reserve) for name in usage}


def _reserve_counted(cubin):
    """Whether the cubin reserves the system's shared memory in its ELF (a .nv.reservedSmem symbol: nvcc 13's
    sm_90 cubins). Then --dump-resource-usage counts those 1024 bytes in every function's SHARED (a kernel with
    no __shared__ at all reads SHARED:1024); Triton's cubins have no such symbol and report their own bytes."""
    return ".nv.reservedSmem" in _run(["-elf"], cubin)


def blocks_per_sm(registers, threads, shared):
    """Blocks of `threads` threads using `registers` per thread and `shared` bytes resident on one sm_90 SM:
    the least of the warp, block, register and shared-memory limits (0 if one block does not fit)."""
    if threads <= 0:
        return 0
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // SM90_REGISTER_UNIT) * SM90_REGISTER_UNIT
    by_registers = (SM90_REGISTERS // per_warp) // warps
    by_warps = SM90_MAX_WARPS // warps
    if shared > SM90_SHARED_PER_BLOCK:
        return 0
    per_block = -(-(shared + SM90_SHARED_RESERVED) // SM90_SHARED_UNIT) * SM90_SHARED_UNIT
    by_shared = SM90_SHARED_PER_SM // per_block
    return max(0, min(SM90_MAX_BLOCKS, by_warps, by_registers, by_shared))
