"""Evaluation of a trained model on its representation (mu for the VAEs, h for SimCLR).

- Content, from non-augmented images, for each of the dataset's targets (the class; CelebA: hair colour and
  gender), on the images labelled for it: linear and MLP probes (simvae_fast.app.probes: the official 200 epochs,
  validation-chosen epoch, test accuracy reported at that epoch) and kNN accuracy, the majority vote of the
  k = 20 training representations nearest by cosine similarity.
- Style (simvae_fast.app.style): the same probes predict what the augmentation changed from the representation
  of augmented images: the vertical flip (accuracy), the crop's scale and position, the colour jitter (R²).
results.json: {"content": {target: {"linear", "mlp", "knn"}}, "style": {target: {"linear", "mlp"}}} beside the
run's header; a table is printed, and loss.png (from metrics.csv) and reconstructions.png are plotted.
"""
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from simvae_fast.app.augment import to_float  # noqa: E402
from simvae_fast.app.probes import PROBES, classification, representations, train_probes  # noqa: E402
from simvae_fast.app.style import evaluate_style  # noqa: E402

KNN_K = 20


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
    """Content probes, kNN and style probes of `model` on `dataset` (data.Dataset) as a dict."""
    splits = {name: (representations(model, getattr(dataset, name).images, device),
                     getattr(dataset, name).labels.to(device)) for name in ("train", "val", "test")}
    content = {}
    for column, (target, classes) in enumerate(dataset.targets):
        labelled = {}
        for name, (features, labels) in splits.items():
            keep = labels[:, column] >= 0  # CelebA's hair colour: images with several hair attributes have none
            labelled[name] = (features[keep], {target: labels[keep, column]})
        content[target] = train_probes({target: classification(len(classes))}, *labelled.values(), probe_epochs,
                                       seed)[target]
        bank, bank_labels = labelled["train"][0], labelled["train"][1][target]
        content[target]["knn"] = {"k": KNN_K, **{
            f"{name}_acc": knn_accuracy(bank, bank_labels, labelled[name][0], labelled[name][1][target], len(classes))
            for name in ("val", "test")}}
    return {"content": content, "style": evaluate_style(model, dataset, device, probe_epochs, seed)}


def format_table(results):
    row = "{:<28} {:>8} {:>9} {:>8}"
    lines = [row.format("content probe", "val", "test", "epoch")]
    for target, probes in results["content"].items():
        for kind in PROBES:
            r = probes[kind]
            lines.append(row.format(f"{target} acc, {kind}", f"{r['val_acc']:.4f}", f"{r['test_acc']:.4f}",
                                    f"{r['epoch']}/{r['epochs']}"))
        knn = probes["knn"]
        lines.append(row.format(f"{target} acc, knn k={knn['k']}", f"{knn['val_acc']:.4f}", f"{knn['test_acc']:.4f}",
                                "-"))
    lines.append(row.format("style probe", "val", "test", "epoch"))
    for target, probes in results["style"].items():
        for kind in PROBES:
            r = probes[kind]
            metric = "acc" if "val_acc" in r else "r2"
            lines.append(row.format(f"{target} {metric}, {kind}", f"{r['val_' + metric]:.4f}",
                                    f"{r['test_' + metric]:.4f}", f"{r['epoch']}/{r['epochs']}"))
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
