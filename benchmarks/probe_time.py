"""Time the official probe protocol (simvae_fast.app.probes: linear and MLP probes, Adam 3e-4, batch 64, 200
epochs, both trained in one loop) and the kNN accuracy on synthetic features: D = 64, 50,000 training, 5,000
validation and 10,000 test rows, 10 Gaussian clusters.

    python benchmarks/probe_time.py [--dim 64] [--epochs 200]

For benchmarks/results/images.md: prints the seconds of the probes and of kNN, the chosen epochs and accuracies,
and the command, machine and date. Also times one epoch of the same two probes as separate nn.Modules with
autograd and torch.optim.Adam (the old implementation), for the ratio.
"""
import argparse
import datetime
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from harness import git_version, machine
from simvae_fast.app import probes
from simvae_fast.app.evaluate import knn_accuracy


def features(n, centres, generator):
    labels = torch.randint(0, len(centres), (n,), generator=generator)
    return centres[labels] + torch.randn(n, centres.shape[1], generator=generator), labels


def autograd_epoch_seconds(x, y, dim, classes):
    """One epoch of separate autograd probes (the linear and the MLP) at batch 64: the implementation replaced."""
    started = time.perf_counter()
    for probe in (nn.Linear(dim, classes), nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, classes))):
        optimizer = torch.optim.Adam(probe.parameters(), lr=probes.PROBE_LR, fused=True)
        for idx in torch.randperm(len(y)).split(probes.PROBE_BATCH):
            loss = F.cross_entropy(probe(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=probes.PROBE_EPOCHS)
    p.add_argument("--train", type=int, default=50000)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    classes = 10
    centres = torch.randn(classes, args.dim, generator=g) * 0.3  # overlapping clusters: accuracy well below 1
    train, val, test = (features(n, centres, g) for n in (args.train, 5000, 10000))
    task = {"class": probes.classification(classes)}
    print(f"probe_time.py {' '.join(sys.argv[1:])}: simvae_fast {git_version()}, torch {torch.__version__}, "
          f"{machine(torch.device('cpu'))}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    started = time.perf_counter()
    results = probes.train_probes(task, *((x, {"class": y}) for x, y in (train, val, test)), args.epochs)["class"]
    probe_seconds = time.perf_counter() - started
    started = time.perf_counter()
    knn = [knn_accuracy(*train, x, y, classes) for x, y in (val, test)]
    knn_seconds = time.perf_counter() - started
    torch.set_num_threads(1)
    old = autograd_epoch_seconds(*train, args.dim, classes)
    print(f"probes (linear + MLP, {args.epochs} epochs, one thread): {probe_seconds:.1f} s "
          f"({probe_seconds / args.epochs:.3f} s an epoch; separate autograd probes: {old:.3f} s an epoch)")
    print(f"kNN (k = 20, val + test): {knn_seconds:.1f} s; total {probe_seconds + knn_seconds:.1f} s")
    for kind in probes.PROBES:
        r = results[kind]
        print(f"  {kind}: epoch {r['epoch']}/{r['epochs']}, val {r['val_acc']:.4f}, test {r['test_acc']:.4f}")
    print(f"  knn: val {knn[0]:.4f}, test {knn[1]:.4f}")


if __name__ == "__main__":
    main()
