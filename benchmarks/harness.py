"""Benchmark harness: forward, backward and forward+backward time and peak memory of a case per provider.

A Case builds its inputs for a provider and returns a closure that runs the forward and returns a scalar loss.
Times are medians with 20th/80th percentiles over `rep` runs after `warmup` runs (CUDA events on a GPU,
perf_counter on CPU). A case may state its work per mode, (FLOPs, bytes) = work(mode, dtype): each row then
carries the achieved TFLOP/s and GB/s at its median time (nominal work: the same for every provider).
Rows go to a CSV keyed by op, provider, mode, shape, dtype, device, version and date; appending to an existing
CSV keeps that file's columns.
"""
import csv
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

import simvae_fast
from simvae_fast import contrastive, latent
from simvae_fast.backends import backends
from simvae_fast.profiling import peak_memory_bytes

KERNEL_PROVIDERS = ("cpu", "triton", "cuda")
PROVIDERS = ("reference", "compile") + KERNEL_PROVIDERS
MODES = ("forward", "backward", "full")
IMPLEMENTATIONS = {"info_nce": contrastive.IMPLEMENTATIONS, "latent": latent.IMPLEMENTATIONS}
FIELDS = ("op", "provider", "mode", "shape", "dtype", "device", "median_ms", "p20_ms", "p80_ms", "peak_mb",
          "speedup_vs_reference", "version", "torch", "date", "machine", "command", "tflops", "gbps")


@dataclass(frozen=True)
class Case:
    op: str
    shape: str
    make: Callable  # (provider, device, dtype) -> closure() -> a scalar loss, or (outputs, upstream gradients)
    providers: tuple = PROVIDERS
    work: Optional[Callable] = None  # (mode, dtype) -> (FLOPs, bytes moved), nominal


def runs_on(op, provider, device):
    """Kernel providers run where the op has them and their backend is usable on real hardware (never the
    Triton interpreter)."""
    if provider not in KERNEL_PROVIDERS:
        return True
    if provider not in IMPLEMENTATIONS.get(op, {}):
        return False
    if provider == "cpu":
        return device.type == "cpu" and backends()["cpu"].usable
    return device.type == "cuda" and backends()[provider].usable


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, warmup, rep, before=None):
    """Milliseconds of each of `rep` calls of fn() (after `warmup` calls); before() runs untimed first."""
    for _ in range(warmup):
        if before is not None:
            before()
        fn()
    times = []
    for _ in range(rep):
        if before is not None:
            before()
        _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _summary(times):
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return {"median_ms": statistics.median(times), "p20_ms": q[1], "p80_ms": q[7]}


def run_backward(result):
    """Backward of a closure's result: a scalar loss, or (outputs, upstream gradients) of a multi-output op."""
    if isinstance(result, torch.Tensor):
        result.backward()
    else:
        torch.autograd.backward(*result)


def measure(case, provider, device, dtype, modes=MODES, warmup=3, rep=20):
    """One row per mode for one provider, plus peak memory of forward+backward."""
    closure = case.make(provider, device, dtype)
    state = {}

    def forward():
        state["loss"] = closure()

    def backward():
        run_backward(state["loss"])

    def full():
        run_backward(closure())

    timed = {"forward": (forward, None), "backward": (backward, forward), "full": (full, None)}
    rows = []
    for mode in modes:
        fn, before = timed[mode]
        rows.append({"mode": mode, **_summary(time_ms(fn, device, warmup, rep, before))})
    _, peak = peak_memory_bytes(full, device)
    for row in rows:
        row.update(op=case.op, provider=provider, shape=case.shape, dtype=str(dtype).removeprefix("torch."),
                   device=device.type, peak_mb=peak / 2**20, tflops="", gbps="")
        if case.work is not None:
            flops, moved = case.work(row["mode"], dtype)
            seconds = row["median_ms"] / 1e3
            row.update(tflops=flops / seconds / 1e12 if flops else "", gbps=moved / seconds / 1e9 if moved else "")
    return rows


def add_speedups(rows):
    """speedup_vs_reference = reference median / provider median, within the rows of one run."""
    ref = {(r["op"], r["shape"], r["mode"], r["dtype"]): r["median_ms"] for r in rows if r["provider"] == "reference"}
    for r in rows:
        base = ref.get((r["op"], r["shape"], r["mode"], r["dtype"]))
        r["speedup_vs_reference"] = base / r["median_ms"] if base else ""
    return rows


def machine(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def git_version():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return f"{simvae_fast.__version__}+{rev.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        return simvae_fast.__version__


def stamp(rows, device):
    """Adds version, torch, date, machine and the command that made the rows."""
    extra = {"version": git_version(), "torch": torch.__version__,
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "machine": machine(device), "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    for r in rows:
        r.update(extra)
    return rows


def append_csv(path, rows):
    """Appends rows under the file's own header (a CSV from before a column was added keeps its columns);
    a new file gets FIELDS."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fields = FIELDS if new else next(csv.reader(open(path, newline="")))
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
