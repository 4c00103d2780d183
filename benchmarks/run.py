"""Run benchmark cases, print a table with speedups measured in the same run, append rows to a CSV, plot.

    python benchmarks/run.py --op info_nce --device cpu --shapes N=1024 N=4096 --plot

Each provider's rows are appended to the CSV as soon as they are measured (a run cut short keeps what it
measured); speedup_vs_reference needs the reference measured first in the same run (it is first by default).
"""
import argparse
import os

import torch

import harness
from cases import CASES
from plot import plot_csv

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", nargs="+", choices=sorted(CASES), default=sorted(CASES), help="ops to run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--providers", nargs="+", choices=harness.PROVIDERS, default=list(harness.PROVIDERS))
    p.add_argument("--modes", nargs="+", choices=harness.MODES, default=list(harness.MODES))
    p.add_argument("--shapes", nargs="+", default=None, help="keep cases whose shape label contains one of these ('...$': ends with it)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rep", type=int, default=10)
    p.add_argument("--csv", default=os.path.join(RESULTS, "results.csv"), help="CSV to append rows to")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="plot the CSV afterwards (default: the CSV's name with .png)")
    return p.parse_args()


def _matches(label, pattern):
    return label.endswith(pattern[:-1]) if pattern.endswith("$") else pattern in label


def selected(args):
    device = torch.device(args.device)
    for op in args.op:
        for case in CASES[op]:
            if args.shapes and not any(_matches(case.shape, s) for s in args.shapes):
                continue
            for provider in case.providers:
                if provider in args.providers and harness.runs_on(op, provider, device):
                    yield case, provider


def print_table(rows):
    print(f"\n{'op':9} {'shape':22} {'provider':9} {'mode':8} {'median ms':>10} {'p20-p80 ms':>17} "
          f"{'peak MB':>9} {'speedup':>8}")
    for r in rows:
        speedup = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] != "" else "-"
        print(f"{r['op']:9} {r['shape']:22} {r['provider']:9} {r['mode']:8} {r['median_ms']:10.3f} "
              f"{r['p20_ms']:8.3f}-{r['p80_ms']:<8.3f} {r['peak_mb']:9.1f} {speedup:>8}")


def main():
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rows, todo = [], list(selected(args))
    for i, (case, provider) in enumerate(todo, 1):
        new = harness.measure(case, provider, device, dtype, args.modes, args.warmup, args.rep)
        rows += new
        harness.stamp(harness.add_speedups(rows), device)
        harness.append_csv(args.csv, new)
        print(f"[{i}/{len(todo)}] {case.op} {case.shape} {provider}: "
              + ", ".join(f"{r['mode']} {r['median_ms']:.3f} ms" for r in new), flush=True)
    print_table(rows)
    print(f"\nappended {len(rows)} rows to {args.csv}")
    if args.plot is not None:
        png = args.plot or os.path.splitext(args.csv)[0] + ".png"
        plot_csv(args.csv, png)
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
