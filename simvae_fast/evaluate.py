"""Evaluation of a trained model on its representation of non-augmented images (mu for the VAEs, h for SimCLR).

- Linear probe Linear(D, C) and MLP probe Linear(D, D) -> ReLU -> Linear(D, C): Adam (lr 3e-4), batch 64,
  `probe_epochs` epochs on the training split. The epoch is chosen by accuracy on the validation split (held out of
  the training set) and the test accuracy is reported at that epoch: never the best test epoch.
- kNN accuracy: majority vote of the k = 20 training representations nearest by cosine similarity.
Writes results.json, prints a table, and plots loss.png (from metrics.csv) and reconstructions.png.
"""
import contextlib
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from simvae_fast.augment import to_float  # noqa: E402

PROBE_LR, PROBE_BATCH, KNN_K = 3e-4, 64, 20
PROBES = ("linear", "mlp")


@torch.no_grad()
def representations(model, images, device, batch=1024):
    """model.represent of uint8 images [N, C, H, W], in batches, as float32 [N, D] on `device`."""
    model.eval()
    out = [model.represent(to_float(images[i:i + batch].to(device))).float() for i in range(0, len(images), batch)]
    return torch.cat(out)


def make_probe(kind, dim, classes):
    if kind == "linear":
        return nn.Linear(dim, classes)
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, classes))


@torch.no_grad()
def accuracy(probe, features, labels):
    return (probe(features).argmax(dim=1) == labels).float().mean().item()


@contextlib.contextmanager
def one_thread_on_cpu(device):
    """The probes' tiny matrices gain nothing from intra-op threads on the CPU, and lose much to their
    synchronisation when the cores are busy (measured: 6x slower with 2 threads on a loaded 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_probe(kind, train, val, test, classes, epochs, seed):
    """Train a probe on (features, labels) splits; returns the validation-chosen epoch and its accuracies."""
    features, labels = train
    device = features.device
    torch.manual_seed(seed)
    probe = make_probe(kind, features.shape[1], classes).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR, fused=True)
    order_generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        probe.train()
        for idx in torch.randperm(len(labels), generator=order_generator).to(device).split(PROBE_BATCH):
            loss = F.cross_entropy(probe(features[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        probe.eval()
        history.append({"epoch": epoch, "val_acc": accuracy(probe, *val), "test_acc": accuracy(probe, *test)})
    chosen = max(history, key=lambda h: h["val_acc"])  # the first epoch with the best validation accuracy
    return {**chosen, "epochs": epochs, "history": history}


@torch.no_grad()
def knn_accuracy(bank, bank_labels, queries, query_labels, classes, k=KNN_K, chunk=1024):
    """Accuracy of the majority vote of the k nearest bank rows by cosine similarity (ties: the lower class)."""
    bank = F.normalize(bank, dim=1)
    k = min(k, len(bank))
    correct = 0
    for start in range(0, len(queries), chunk):
        similarity = F.normalize(queries[start:start + chunk], dim=1) @ bank.T
        neighbours = bank_labels[similarity.topk(k, dim=1).indices]
        votes = F.one_hot(neighbours, classes).sum(dim=1)
        correct += (votes.argmax(dim=1) == query_labels[start:start + chunk]).sum().item()
    return correct / len(queries)


def evaluate(model, dataset, device, probe_epochs, seed=0):
    """Probe and kNN results of `model` on `dataset` (data.Dataset) as a dict."""
    splits = {}
    for name in ("train", "val", "test"):
        split = getattr(dataset, name)
        splits[name] = (representations(model, split.images, device), split.labels.to(device))
    classes = len(dataset.classes)
    with one_thread_on_cpu(device):
        results = {kind: train_probe(kind, splits["train"], splits["val"], splits["test"], classes, probe_epochs,
                                     seed) for kind in PROBES}
    results["knn"] = {"k": KNN_K, **{f"{name}_acc": knn_accuracy(*splits["train"], *splits[name], classes)
                                     for name in ("val", "test")}}
    return results


def format_table(results):
    lines = [f"{'probe':<10} {'val acc':>8} {'test acc':>9} {'epoch':>8}"]
    for kind in PROBES:
        r = results[kind]
        lines.append(f"{kind:<10} {r['val_acc']:>8.4f} {r['test_acc']:>9.4f} {r['epoch']:>4}/{r['epochs']:<3}")
    knn = results["knn"]
    lines.append(f"{'knn k=' + str(knn['k']):<10} {knn['val_acc']:>8.4f} {knn['test_acc']:>9.4f} {'-':>8}")
    return "\n".join(lines)


def plot_losses(metrics_csv, out_png):
    """One panel per column of metrics.csv (loss and its parts, per view) against the step."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    fields = [k for k in rows[0] if k not in ("step", "epoch")]
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.2), squeeze=False)
    for ax, field in zip(axes[0], fields):
        ax.plot(steps, [float(r[field]) for r in rows])
        ax.set_xlabel("step")
        ax.set_title(f"{field} per view")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_reconstructions(model, images, device, out_png, n=10):
    """Test images (top row) and the decoder's output at z = mu (bottom row); nothing for models without one."""
    model.eval()
    x = to_float(images[:n].to(device))
    recon = model.reconstruct(x)
    if recon is None:
        return False
    fig, axes = plt.subplots(2, len(x), figsize=(len(x), 2.2), squeeze=False)
    for i in range(len(x)):
        for row, img in enumerate((x[i], recon[i])):
            axes[row][i].imshow(img.float().cpu().permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row][i].axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return True


def write_report(run_dir, model, dataset, device, probe_epochs, seed, header):
    """Evaluate, write results.json and the PNGs into run_dir, print the table; returns the results."""
    run_dir = Path(run_dir)
    results = {**header, **evaluate(model, dataset, device, probe_epochs, seed)}
    with open(run_dir / "results.json", "w") as f:
        json.dump(results, f, indent=2)
    plot_losses(run_dir / "metrics.csv", run_dir / "loss.png")
    plot_reconstructions(model, dataset.test.images, device, run_dir / "reconstructions.png")
    print(format_table(results))
    print(f"results: {run_dir / 'results.json'}")
    return results
