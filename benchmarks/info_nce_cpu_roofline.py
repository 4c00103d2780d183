"""InfoNCE on the CPU against the machine's sgemm, in one run (from benchmarks/):

    ../.venv/bin/python info_nce_cpu_roofline.py --shapes N=8192,D=128,J=2 --providers reference compile cpu

For each selected info_nce case: the harness's rows (harness.measure, forward+backward, speedups against the
reference in this run; appended to --csv as run.py does), then the cpu provider's forward+backward against
sgemm of the same shapes on all threads: torch.mm of [N, D] x [D, N] (the logits) and of [N, N] x [N, D] (the
gradient product), 2 N^2 D FLOPs each. The kernel does 4 N^2 D FLOPs of products (csrc/info_nce_cpu.cpp's
header), so its rate counted at 4 N^2 D over the sgemm pair's rate is the fraction of the BLAS roof it
reaches (the target: >= 0.8). The two are timed alternately, one repetition each in turn, so that a change
in the machine's load between them (other processes) hits both; medians over --rep pairs.
"""
import argparse
import os
import statistics

import torch

import harness
from cases import CASES
from run import RESULTS, print_table


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", required=True, help="info_nce case labels (exact), e.g. N=8192,D=128,J=2")
    p.add_argument("--providers", nargs="+", default=["reference", "compile", "cpu"], choices=harness.PROVIDERS)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rep", type=int, default=5)
    p.add_argument("--csv", default=os.path.join(RESULTS, "results.csv"), help="CSV to append the harness rows to")
    return p.parse_args()


def kernel_and_sgemm_ms(case, n, d, warmup, rep):
    """Median ms of the cpu provider's forward+backward and of torch.mm [n, d] x [d, n] followed by
    [n, n] x [n, d] (4 n^2 d FLOPs, fp32), timed alternately."""
    closure = case.make("cpu", torch.device("cpu"), torch.float32)
    u = torch.randn(n, d)
    s = torch.empty(n, n)
    out = torch.empty(n, d)

    def pair():
        torch.mm(u, u.t(), out=s)
        torch.mm(s, u, out=out)

    def full():
        harness.run_backward(closure())

    times = {full: [], pair: []}
    for fn in times:
        harness.time_ms(fn, torch.device("cpu"), warmup, 0)
    for _ in range(rep):
        for fn, samples in times.items():
            samples += harness.time_ms(fn, torch.device("cpu"), 0, 1)
    return statistics.median(times[full]), statistics.median(times[pair])


def shape_of(label):
    fields = dict(part.split("=") for part in label.split(","))
    return int(fields["N"]), int(fields["D"])


def main():
    args = parse_args()
    device, dtype = torch.device("cpu"), torch.float32
    cases = {case.shape: case for case in CASES["info_nce"]}
    rows, roofs = [], []
    for label in args.shapes:
        case = cases[label]
        for provider in args.providers:
            rows += harness.measure(case, provider, device, dtype, ["full"], args.warmup, args.rep)
            if provider == "cpu":
                n, d = shape_of(label)
                kernel_ms, gemm_ms = kernel_and_sgemm_ms(case, n, d, args.warmup, args.rep)
                flops = 4 * n * n * d
                roofs.append((label, kernel_ms, flops / kernel_ms / 1e6, gemm_ms, flops / gemm_ms / 1e6))
    harness.stamp(harness.add_speedups(rows), device)
    print_table(rows)
    print(f"\n{'shape':34} {'cpu ms':>8} {'GFLOP/s at 4N^2D':>17} {'sgemm pair ms':>14} {'sgemm GFLOP/s':>14} "
          f"{'fraction':>9}")
    for label, kernel_ms, kernel_rate, gemm_ms, gemm_rate in roofs:
        print(f"{label:34} {kernel_ms:8.1f} {kernel_rate:17.1f} {gemm_ms:14.1f} {gemm_rate:14.1f} "
              f"{kernel_rate / gemm_rate:9.2f}")
    harness.append_csv(args.csv, rows)
    print(f"\nappended {len(rows)} rows to {args.csv}; threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
