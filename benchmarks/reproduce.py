"""Reproduce the paper's two claims on real data: SimVAE vs the VAE vs SimCLR on FashionMNIST and MNIST.

    python benchmarks/reproduce.py                 # the recorded budget (make reproduce), 70 min on 2 cores
    python benchmarks/reproduce.py --seeds 1 --epochs 1 --limit-train 2000 --probe-epochs 2   # a quick look

Every run trains one method with simvae_fast.train's defaults, which are the official SimVAE settings for grey
images (docs/math.md §5) except the number of epochs: the same MLP encoder (784-2000-500-500-2·10 for the VAEs,
-10 for SimCLR's representation h, then its projection head), D = 10, J = 2 views of the official augmentations
(random resized crop 0.4-1, vertical flip), 64 images a step, Adam lr 8e-5 (eps 1e-4), sum over the batch; the
same seeds for every method (the model's initialisation, data order, augmentations and noise derive from it).
Each run is then evaluated on content (linear and MLP probes of the class, the official 200 probe epochs,
validation-chosen epoch, and kNN accuracy) and style (simvae_fast.style: vertical flip, crop scale and position) and kept in
<runs>/<dataset>/<method>-seed<seed>/. A run whose results.json holds the same configuration is reused, so an
interrupted reproduction continues where it stopped. Runs go `--jobs` at a time, one thread each (on a 2-core
machine two one-thread runs do 1.6x the steps of one two-thread run: the MLP's matrices are small).

Budget (the defaults): 6 epochs a run, 3 seeds, both datasets: 18 runs in 70 minutes (measured, with 20-epoch
probes, on an idle machine) on this project's 2-core CPU machines with --jobs 2; the 200-epoch probes add about a
minute of one-thread compute a run. The paper trains 400 epochs; at 6 epochs every model is far from converged,
so the results say what holds early in training, not at the paper's budget.
Writes <results-dir>/reproduction.md (tables of mean ± std over seeds, the claims checked against them, the
command, budget, machine and date), reproduction_runs.csv (every run) and reproduction.png (bar chart).
"""
import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from reproduce_report import write_outputs
from simvae_fast import data
from simvae_fast.methods import METHODS
from simvae_fast.train import Config

HERE = Path(__file__).resolve().parent
DATASETS = ("fashion-mnist", "mnist")
FIRST_SEED = 1234  # the official code's seed; seed k of a reproduction is FIRST_SEED + k


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seeds", type=int, default=3, help="seeds per dataset and method (default 3)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs per run (default 6)")
    p.add_argument("--probe-epochs", type=int, default=Config.probe_epochs)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    p.add_argument("--runs", default="runs/reproduce", help="folder of the run directories")
    p.add_argument("--results-dir", default=str(HERE / "results"), help="where the report, CSV and chart go")
    p.add_argument("--data-root", help="folder holding the datasets (default: the cache of `simvae-fast data fetch`)")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (quick runs)")
    p.add_argument("--limit-test", type=int, help="use only the first N test images (quick runs)")
    p.add_argument("--val-size", type=int, default=Config.val_size)
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the dataset checksums")
    args = p.parse_args(argv)
    for name in ("seeds", "epochs", "probe_epochs", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive number, got {getattr(args, name)}")
    return args


def run_configs(args):
    """The Config of every run, datasets outermost, seeds innermost."""
    return [
        Config(method=method, dataset=dataset, out=str(Path(args.runs) / dataset / f"{method}-seed{seed}"),
               data_root=args.data_root, epochs=args.epochs, seed=seed, limit_train=args.limit_train,
               limit_test=args.limit_test, val_size=args.val_size, verify=args.verify, probe_epochs=args.probe_epochs)
        for dataset in args.datasets for method in args.methods
        for seed in range(FIRST_SEED, FIRST_SEED + args.seeds)
    ]


def finished(config):
    """The saved results of a run with this configuration, or None."""
    path = Path(config["out"]) / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return results if results.get("config") == config else None


def train_and_evaluate(config, threads=1):
    """One run in a worker process: train, evaluate, write results.json (its printout goes to log.txt)."""
    import torch

    from simvae_fast.evaluate import write_report
    from simvae_fast.train import train

    torch.set_num_threads(threads)
    cfg = Config(**config)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(Path(cfg.out) / "log.txt", "w") as log, contextlib.redirect_stdout(log), \
            open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # the runs' own progress bars
        model, dataset, device = train(cfg, overwrite=True)
        trained = time.time()
        header = {"method": cfg.method, "dataset": cfg.dataset, "epochs": cfg.epochs, "config": config,
                  "train_seconds": trained - started}
        results = write_report(cfg.out, model, dataset, device, cfg.probe_epochs, cfg.seed, header)
    results["seconds"] = time.time() - started
    (Path(cfg.out) / "results.json").write_text(json.dumps(results, indent=2))
    return results


def run_all(configs, jobs):
    """Results of every config and how many were reused (finished earlier); the others run `jobs` at a time,
    with a progress bar."""
    results = {i: finished(dataclasses.asdict(c)) for i, c in enumerate(configs)}
    todo = [i for i, r in results.items() if r is None]
    print(f"{len(configs) - len(todo)} of {len(configs)} runs already done; {len(todo)} to go, {jobs} at a time")
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(todo), desc="runs", unit="run", dynamic_ncols=True) as bar:
        futures = {pool.submit(train_and_evaluate, dataclasses.asdict(configs[i])): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            bar.set_postfix_str(f"{configs[i].dataset} {configs[i].method} seed {configs[i].seed}: "
                                f"{results[i]['seconds']:.0f} s")
            bar.update()
    return [results[i] for i in range(len(configs))], len(configs) - len(todo)


def main(argv=None):
    args = parse_args(argv)
    try:  # fail now, not in a worker: the error names the fetch command
        for dataset in args.datasets:
            data.find_files(dataset, args.data_root)
    except data.DatasetNotFoundError as err:
        print(f"reproduce: {err}", file=sys.stderr)
        return 2
    configs = run_configs(args)
    started = datetime.now(timezone.utc)
    results, reused = run_all(configs, args.jobs)
    command = "python benchmarks/reproduce.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    paths = write_outputs(results, reused, args, command.strip(), started, datetime.now(timezone.utc),
                          Path(args.results_dir))
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
