"""Two builds of simvae_fast timed against each other in one run, for before/after checks on a busy machine.

    python benchmarks/ab_builds.py --a /tmp/base --b . --op latent --rounds 10

Each round runs one short child process per build, in alternating order (A B, B A, ...), each timing `--rep`
forward + backward calls of the op on the cpu backend after `--warmup`; the child imports simvae_fast from the
build's folder (PYTHONPATH), so both builds see the same machine state within a round. Reported per build, for
the wall time and for the process's CPU time (all its threads; waiting for a core shared with other processes
does not count there): the minimum over all calls (the least disturbed) and the median of the per-round
medians with their quartiles; then B/A of the minima, and of each round's medians (the builds ran back to back
there), as their median and range. --threads sets torch's intra-op threads (1 makes the CPU time the cost of
the work itself). Ops: latent (G=4096, J=2, D=128, noise inside, the harness's "full" mode) and info_nce
(G=2048, J=2, D=128).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
import simvae_fast
op, warmup, rep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
if op == "latent":
    mu = torch.randn(4096, 2, 128, generator=g).requires_grad_()
    logvar = (0.1 * torch.randn(4096, 2, 128, generator=g)).requires_grad_()
    def step():
        out = simvae_fast.simvae_latent(mu, logvar, seed=1, backend="cpu")
        (out.z.square().sum() + out.log_prior.sum() + out.entropy.sum()).backward()
else:
    z = torch.randn(2048, 2, 128, generator=g).requires_grad_()
    def step():
        simvae_fast.info_nce(z, backend="cpu").backward()
times, cpu_times = [], []
for i in range(warmup + rep):
    start, cpu_start = time.perf_counter(), time.process_time()
    step()
    if i >= warmup:
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
print(json.dumps({"file": simvae_fast.__file__, "times": times, "cpu_times": cpu_times}))
"""


def run_child(folder, op, warmup, rep, threads):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(folder), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, op, str(warmup), str(rep)], env=env, check=True,
                         capture_output=True, text=True, cwd="/").stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="folder of build A (the one before)")
    p.add_argument("--b", required=True, help="folder of build B (the one after)")
    p.add_argument("--op", choices=["latent", "info_nce"], default="latent")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rep", type=int, default=30)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    results = {(name, kind): [] for name in "AB" for kind in ("times", "cpu_times")}
    for r in range(args.rounds):
        for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
            child = run_child(getattr(args, name.lower()), args.op, args.warmup, args.rep, args.threads)
            if r == 0:
                print(f"{name}: {child['file']}")
            for kind in ("times", "cpu_times"):
                results[(name, kind)].append(child[kind])
    for kind in ("times", "cpu_times"):
        for name in "AB":
            rounds = results[(name, kind)]
            medians = [1e3 * statistics.median(t) for t in rounds]
            low, mid = 1e3 * min(min(t) for t in rounds), statistics.median(medians)
            q1, _, q3 = statistics.quantiles(medians, n=4) if len(medians) > 1 else (mid, mid, mid)
            print(f"{name} {kind:9}: min {low:8.3f} ms, median of round medians {mid:8.3f} ms "
                  f"(quartiles {q1:.3f} - {q3:.3f})")
        # Paired per round: both builds ran back to back, so a round's ratio cancels the load of that moment.
        ratios = [statistics.median(b) / statistics.median(a)
                  for a, b in zip(results[("A", kind)], results[("B", kind)])]
        a_min = min(min(t) for t in results[("A", kind)])
        b_min = min(min(t) for t in results[("B", kind)])
        print(f"B/A {kind:9}: min {b_min / a_min:.3f}; per-round median ratios: median "
              f"{statistics.median(ratios):.3f}, range {min(ratios):.3f} - {max(ratios):.3f}")

if __name__ == "__main__":
    main()
