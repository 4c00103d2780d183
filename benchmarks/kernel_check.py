"""The compiled-code check: every GPU kernel compiled for sm_90 on this GPU-less machine, its SASS read, rules.

    python benchmarks/kernel_check.py                 (make kernel-check; CI runs it)
    python benchmarks/kernel_check.py --quick         (fp32/bf16 at D = 10, 128 only: a quicker look)

Triton: the launchers (kernel_cases.py: InfoNCE forward/backward, latent forward/backward) run unmodified on CPU
tensors under a stand-in driver (standin_driver.py) with TRITON_INTERPRET unset, so every kernel they launch is
compiled with its real specialisation (dtypes fp32/bf16/fp16/fp64, D in {10, 64, 128, 129, 256}, every
boolean option, TF32 allowed or not, deterministic mode) for sm_90 and not launched. CUDA: every csrc/cuda/*.cu through `nvcc -cubin -arch=sm_90` with
torch's extension flags (cuda_cubins.py). The SASS of each (cuobjdump from the Triton wheel, sass.py) gives
registers, stack, spill instructions (STL/LDL), shared memory, HMMA/HGMMA, FFMA and MUFU.EX2 counts and
resident blocks per SM.
Writes benchmarks/results/sass.md (--out) and exits non-zero, listing why, when
  - an fp32/bf16/fp16 InfoNCE or latent kernel spills (stack frame, or any STL/LDL);
  - a kernel needs more than the 227 KB of shared memory an sm_90 block may have;
  - a half-precision InfoNCE kernel that multiplies matrices has no HMMA/HGMMA. A Triton kernel multiplies
    matrices when its Triton IR has a tt.dot; a .cu kernel (no IR to read) when its SASS has tensor-core
    instructions or at least MATMUL_FMAS scalar FMAs (an unrolled inner-product tile; row kernels have ~100).
A kernel named in EXPECTED_FAILURES may fail (its failures are listed, not counted); the output says which of
them now pass, so the list can be emptied. --strict also fails on those (and on names that match no kernel).
"""
import argparse
import concurrent.futures
import datetime
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import torch
import triton

import cuda_cubins
import sass
import standin_driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Kernels allowed to fail, "<source file>::<kernel name>" -> why (e.g. "kernels/info_nce_forward.py::_forward_tiles":
# "spills at D = 257, issue N"). Empty: every kernel passes. Add one only with an open issue that fixes it.
EXPECTED_FAILURES = {}

SPILL_DTYPES = ("fp32", "bf16", "fp16")
HALF_DTYPES = ("bf16", "fp16")
SPILL_OPS = ("info_nce", "latent")  # prefixes: info_nce_exact (the fp32-exact / fp64 CUDA path) too
MATMUL_FMAS = 256
CUDA_DTYPES = {"float": "fp32", "double": "fp64", "__half": "fp16", "__nv_bfloat16": "bf16", "half": "fp16"}


@dataclass
class Row:
    source: str  # kernels/info_nce.py, csrc/cuda/latent.cu
    kernel: str  # the kernel's name (Triton function; CUDA function without namespace and template arguments)
    op: str
    dtype: str
    dim: str
    config: str  # Triton: constexprs and num_warps/num_stages; CUDA: template arguments
    threads: int
    shared: int  # bytes per block
    matmul: bool
    sass: sass.Sass
    blocks_per_sm: int = 0
    failures: list = field(default_factory=list)

    @property
    def key(self):
        return f"{self.source}::{self.kernel}"


def check(row):
    """The rules, as a list of reasons this kernel fails (empty: it passes)."""
    s, why = row.sass, []
    if row.dtype in SPILL_DTYPES and row.op.startswith(SPILL_OPS) and s.spills:
        why.append(f"spills (stack {s.stack} B, {s.spill_stores} STL, {s.spill_loads} LDL)")
    if row.shared > sass.SM90_SHARED_PER_BLOCK:
        why.append(f"{row.shared} B of shared memory > {sass.SM90_SHARED_PER_BLOCK} (227 KB)")
    if row.dtype in HALF_DTYPES and row.op == "info_nce" and row.matmul and s.tensor_core == 0:
        why.append("matrix product without HMMA/HGMMA")
    return why


# --- Triton ---------------------------------------------------------------------------------------------------

def _constexprs(compiled):
    return [f"{name}={getattr(value, 'name', value)}" for name, value in compiled.constexprs.items()]


def _module_source(module):
    """simvae_fast.kernels.info_nce -> kernels/info_nce.py (the package maps simvae_fast.kernels to kernels/)."""
    return "kernels/" + module.rsplit(".", 1)[-1] + ".py"


_SASS = {}  # compiled kernel hash -> its Sass: cases share kernels, and each cuobjdump run costs ~0.5 s


def _sass_of(compiled):
    if compiled.kernel.hash not in _SASS:
        _SASS[compiled.kernel.hash] = next(iter(sass.summarise(compiled.kernel.asm["cubin"]).values()))
    return _SASS[compiled.kernel.hash]


def _triton_row(case, compiled, grid):
    meta, info = compiled.kernel.metadata, _sass_of(compiled)
    threads, shared = meta.num_warps * 32, max(meta.shared, info.static_shared)
    config = _constexprs(compiled) + [f"warps={meta.num_warps}", f"stages={meta.num_stages}",
                                      "grid=" + "x".join(map(str, grid))]
    # op: the launcher's (case.op), not the kernel's file: kernels/info_nce_backward.py holds InfoNCE kernels too
    return Row(source=_module_source(compiled.module), kernel=compiled.name, op=case.op,
               dtype=case.dtype_name, dim=str(case.dim), config=" ".join(config), threads=threads,
               shared=shared, matmul="tt.dot" in compiled.kernel.asm.get("ttir", ""), sass=info,
               blocks_per_sm=sass.blocks_per_sm(info.registers, threads, shared))


def compiling_environment():
    """Set before the package's kernels are imported (in this process, inherited by its workers): Triton reads
    TRITON_INTERPRET when @triton.jit decorates; fp fusion on is Triton 3.9's default until 3.10, and 3.6's (the
    GPU machine's), said explicitly. Not done at import: a test process importing this module keeps its
    interpreter."""
    interpreting = os.environ.pop("TRITON_INTERPRET", None) == "1"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if interpreting and any(name.startswith("simvae_fast.kernels") for name in sys.modules):
        raise RuntimeError("kernel_check: the package's Triton kernels were imported under TRITON_INTERPRET=1")


def _triton_worker(selection, indices):
    """Runs cases[i] for i in indices under the stand-in driver (in a worker process):
    [(case index, rows of the kernels it launched)], [errors]."""
    compiling_environment()
    import kernel_cases  # imports the package's kernels: after compiling_environment()

    cases = list(kernel_cases.cases(**selection))
    results, errors, by_hash = [], [], {}
    with standin_driver.active():
        for index in indices:
            case = cases[index]
            standin_driver.reset_launches()
            try:
                case.run()
            except Exception as err:  # a kernel that does not compile for sm_90, or a launcher that fails
                first = str(err).strip().splitlines()[:1]
                errors.append(f"{case.label}: {type(err).__name__}: {first[0] if first else ''}")
                continue
            by_hash.update((c.kernel.hash, c) for c in standin_driver.captured())
            launched = dict(standin_driver.launches())  # hash -> grid (of its last launch in the case)
            results.append((index, [_triton_row(case, by_hash[h], grid) for h, grid in launched.items()]))
    return results, errors


def triton_rows(selection, jobs):
    """One row per (dtype, D, compiled kernel) the launchers launched over all cases, and the cases that raised.
    The cases are dealt round-robin to `jobs` processes (compilation and cuobjdump are CPU-bound)."""
    import kernel_cases

    count = sum(1 for _ in kernel_cases.cases(**selection))
    chunks = [list(range(count))[i::jobs] for i in range(jobs)]
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        outputs = list(pool.map(_triton_worker, [selection] * jobs, chunks))
    results = sorted((item for out, _ in outputs for item in out), key=lambda item: item[0])
    rows, seen = [], set()
    for _, case_rows in results:
        for row in case_rows:
            key = (row.key, row.dtype, row.dim, row.config)
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows, [e for _, errors in outputs for e in errors]


# --- CUDA -----------------------------------------------------------------------------------------------------

def cuda_rows(assumed_threads=256):
    """One row per kernel instantiation of every csrc/cuda/*.cu, and the files that did not compile."""
    kernels, errors = cuda_cubins.compile_all(os.path.join(ROOT, "csrc"), ROOT)
    rows = []
    for k in kernels:
        dtype = next((CUDA_DTYPES[a] for a in k.template_args if a in CUDA_DTYPES), "-")
        config = "<" + ", ".join(k.template_args) + ">" + (f" launch_bounds={k.threads}" if k.threads else "")
        shared = k.sass.static_shared + k.dynamic_shared
        rows.append(Row(source=k.source, kernel=k.name, op=os.path.splitext(os.path.basename(k.source))[0],
                        dtype=dtype, dim="any", config=config, threads=k.threads, shared=shared,
                        matmul=k.sass.tensor_core > 0 or k.sass.ffma >= MATMUL_FMAS, sass=k.sass,
                        blocks_per_sm=sass.blocks_per_sm(k.sass.registers, k.threads or assumed_threads, shared)))
    return rows, errors


# --- the verdict and the table --------------------------------------------------------------------------------

def verdict(rows, expected=EXPECTED_FAILURES):
    """(unexpected failures, expected failures still failing, expected that now pass, expected names unseen)."""
    for row in rows:
        row.failures = check(row)
    failing = {row.key for row in rows if row.failures}
    seen = {row.key for row in rows}
    unexpected = [row for row in rows if row.failures and row.key not in expected]
    still = sorted(k for k in expected if k in failing)
    now_pass = sorted(k for k in expected if k in seen and k not in failing)
    unseen = sorted(k for k in expected if k not in seen)
    return unexpected, still, now_pass, unseen


COLUMNS = ("kernel", "dtype", "D", "regs", "stack B", "STL/LDL", "shared B", "HMMA/HGMMA", "FFMA", "MUFU.EX2",
           "threads", "blocks/SM", "config", "verdict")


def _table_row(row, expected):
    s = row.sass
    if not row.failures:
        state = "ok"
    else:
        state = ("expected: " if row.key in expected else "FAIL: ") + "; ".join(row.failures)
    threads = str(row.threads) if row.threads else "256*"
    cells = (f"{row.key}", row.dtype, row.dim, s.registers, s.stack, f"{s.spill_stores}/{s.spill_loads}", row.shared,
             f"{s.hmma}/{s.hgmma}", s.ffma, s.mufu_ex2, threads, row.blocks_per_sm, row.config, state)
    return "| " + " | ".join(str(c) for c in cells) + " |"


def overview(rows):
    """Table lines: per Triton kernel and dtype, the worst over its options at each D (most registers, most stack
    bytes, fewest tensor-core instructions) and whether every specialisation there passed."""
    dims = sorted({r.dim for r in rows}, key=int)
    cells = {}
    for r in rows:
        worst = cells.setdefault((r.key, r.dtype), {}).setdefault(r.dim, [0, 0, None, True])
        worst[0], worst[1] = max(worst[0], r.sass.registers), max(worst[1], r.sass.stack)
        if r.matmul:
            worst[2] = r.sass.tensor_core if worst[2] is None else min(worst[2], r.sass.tensor_core)
        worst[3] &= not r.failures
    lines = ["| kernel | dtype | " + " | ".join(f"D={d}" for d in dims) + " |", "|---|---|" + "---|" * len(dims)]
    for (key, dtype), by_dim in cells.items():
        shown = []
        for d in dims:
            if d not in by_dim:
                shown.append("-")
                continue
            regs, stack, tc, ok = by_dim[d]
            shown.append(f"{regs} r, {stack} B" + ("" if tc is None else f", {tc} TC") + ("" if ok else " **fails**"))
        lines.append(f"| {key} | {dtype} | " + " | ".join(shown) + " |")
    return lines + [""]


def report(rows, errors, outcome, expected, seconds, command):
    unexpected, still, now_pass, unseen = outcome
    lines = ["# SASS of the GPU kernels, compiled for sm_90 (H100/H200) without a GPU", "",
             f"Written by `{command}` on {platform.node() or 'this machine'} ({os.cpu_count()} cores, no GPU), "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, in {seconds:.0f} s; "
             f"torch {torch.__version__}, triton {triton.__version__}, {cuda_cubins.version()}.", "",
             "Rules (benchmarks/kernel_check.py): no spill (stack or STL/LDL) in an fp32/bf16/fp16 InfoNCE or latent "
             "kernel; at most 227 KB of shared memory per block; HMMA/HGMMA in every half-precision InfoNCE kernel "
             "that multiplies matrices. Shared: Triton's launch shared memory; CUDA: static `__shared__` plus, for the "
             "InfoNCE tile kernels, the dynamic shared memory their launcher gives them (TileSmem::kBytes; the "
             "latent backward's stash depends on J at run time and is not counted). "
             "blocks/SM: resident blocks per sm_90 SM from registers, threads and shared memory "
             "(256* = no `__launch_bounds__`, figured for 256 threads).", "",
             f"**{len(unexpected)} unexpected failures**, {len(still)} kernels expected to fail still fail, "
             f"{len(now_pass)} expected to fail now pass, {len(errors)} errors.", ""]
    for title, items in (("Errors", errors), ("Unexpected failures", [f"{r.key} {r.dtype} D={r.dim} {r.config}: "
                                                                       + "; ".join(r.failures) for r in unexpected]),
                         ("Expected to fail, now pass (remove from EXPECTED_FAILURES)", now_pass),
                         ("In EXPECTED_FAILURES but no such kernel", unseen)):
        if items:
            lines += [f"## {title}", ""] + [f"- {item}" for item in items] + [""]
    triton_part = [r for r in rows if r.source.endswith(".py")]
    lines += ["## Overview of the Triton kernels: worst over the options at each D", "",
              "r: registers per thread, B: stack bytes, TC: HMMA + HGMMA (matrix-product kernels only).", ""]
    lines += overview(triton_part)
    for title, part in (("Triton kernels (launched by the launchers)", triton_part),
                        ("CUDA kernels (csrc/cuda/*.cu)", [r for r in rows if r.source.endswith(".cu")])):
        lines += [f"## {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += [_table_row(r, expected) for r in part] + [""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "sass.md"))
    p.add_argument("--quick", action="store_true", help="fp32 and bf16 at D = 10 and 128 only")
    p.add_argument("--no-cuda", action="store_true", help="skip the .cu files")
    p.add_argument("--strict", action="store_true", help="also fail when an expected failure now passes")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes compiling Triton kernels")
    args = p.parse_args(argv)
    compiling_environment()

    start = time.perf_counter()
    selection = dict(dtypes=(torch.float32, torch.bfloat16), dims=(10, 128)) if args.quick else {}
    rows, errors = triton_rows(selection, max(1, args.jobs))
    if not args.no_cuda:
        cuda, cuda_errors = cuda_rows()
        rows, errors = rows + cuda, errors + cuda_errors
    expected = {k: v for k, v in EXPECTED_FAILURES.items() if not (args.no_cuda and ".cu::" in k)}
    outcome = verdict(rows, expected)
    seconds = time.perf_counter() - start
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python benchmarks/kernel_check.py", *given])
    text = report(rows, errors, outcome, expected, seconds, command.strip())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")

    unexpected, still, now_pass, unseen = outcome
    print(f"kernel-check: {len(rows)} kernel rows in {seconds:.0f} s -> {os.path.relpath(args.out)}")
    for line in errors:
        print(f"ERROR {line}")
    for row in unexpected:
        print(f"FAIL {row.key} {row.dtype} D={row.dim} {row.config}: {'; '.join(row.failures)}")
    for key in still:
        print(f"expected failure still fails: {key} ({EXPECTED_FAILURES[key]})")
    for key in now_pass:
        print(f"EXPECTED FAILURE NOW PASSES: {key} -- remove it from EXPECTED_FAILURES in benchmarks/kernel_check.py")
    for key in unseen:
        print(f"EXPECTED_FAILURES names no compiled kernel: {key} -- remove it")
    failed = bool(errors or unexpected or (args.strict and (now_pass or unseen)))
    print("kernel-check: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
