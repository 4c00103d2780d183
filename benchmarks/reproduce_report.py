"""The report of benchmarks/reproduce.py: per-run CSV, tables of mean ± std over seeds, the paper's claims checked
against them, and a bar chart.

A claim "A beats B" on a metric is judged from the difference of the means d = mean_A - mean_B and its standard
error se = sqrt(s_A²/n_A + s_B²/n_B) (s: the standard deviation over seeds): "yes" when d > 2 se, "no" when
d < -2 se, otherwise "within seed noise" with the sign of d. With one seed there is no noise estimate.
"""
import csv
import math
import os
import platform
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from harness import git_version  # noqa: E402

METHOD_NAMES = {"simvae": "SimVAE", "vae": "VAE", "simclr": "SimCLR"}
DATASET_NAMES = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
# (group, label, path into a run's results.json)
METRICS = [
    ("content", "linear acc", ("content", "class", "linear", "test_acc")),
    ("content", "MLP acc", ("content", "class", "mlp", "test_acc")),
    ("content", "kNN acc", ("content", "class", "knn", "test_acc")),
    ("style", "flip acc, linear", ("style", "flip", "linear", "test_acc")),
    ("style", "flip acc, MLP", ("style", "flip", "mlp", "test_acc")),
    ("style", "scale R², linear", ("style", "scale", "linear", "test_r2")),
    ("style", "scale R², MLP", ("style", "scale", "mlp", "test_r2")),
    ("style", "position R², linear", ("style", "position", "linear", "test_r2")),
    ("style", "position R², MLP", ("style", "position", "mlp", "test_r2")),
]


def value(results, path):
    for key in path:
        results = results[key]
    return results


def summarise(results):
    """{(dataset, method): {label: [values over seeds]}} in the order the runs came."""
    table = {}
    for r in results:
        cell = table.setdefault((r["dataset"], r["method"]), {label: [] for _, label, _ in METRICS})
        for _, label, path in METRICS:
            cell[label].append(value(r, path))
    return table


def mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(values):
    mean, std = mean_std(values)
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def verdict(a, b):
    """Does the metric's a (values over seeds) beat b? (module docstring)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    d = ma - mb
    if len(a) < 2 or len(b) < 2:
        return f"{'yes' if d > 0 else 'no'} (d = {d:+.3f}; one seed, no noise estimate)"
    se = math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    if d > 2 * se:
        return f"**yes** (d = {d:+.3f}, se {se:.3f})"
    if d < -2 * se:
        return f"**no** (d = {d:+.3f}, se {se:.3f})"
    return f"within seed noise (d = {d:+.3f}, se {se:.3f})"


def claims(table, dataset, methods):
    """Markdown lines checking the two claims on one dataset, for the methods that were run."""
    has = {m: (dataset, m) in table for m in METHOD_NAMES}
    lines = []
    content = [label for group, label, _ in METRICS if group == "content"]
    style = [label for group, label, _ in METRICS if group == "style"]
    if has["simvae"] and has["vae"]:
        lines.append("- Content, SimVAE beats the VAE: " + "; ".join(
            f"{label}: {verdict(table[dataset, 'simvae'][label], table[dataset, 'vae'][label])}" for label in content))
    if all(has.values()):
        gaps = []
        for label in content:
            simclr = mean_std(table[dataset, "simclr"][label])[0]
            gaps.append(f"{label}: {simclr - mean_std(table[dataset, 'simvae'][label])[0]:+.3f} vs "
                        f"{simclr - mean_std(table[dataset, 'vae'][label])[0]:+.3f}")
        lines.append("- Content, gap to SimCLR (SimCLR − SimVAE vs SimCLR − VAE; narrowed when the first is "
                     "smaller): " + "; ".join(gaps))
        behind = [label for label in content if mean_std(table[dataset, "simclr"][label])[0] <
                  min(mean_std(table[dataset, m][label])[0] for m in ("simvae", "vae"))]
        if behind:
            lines.append(f"  SimCLR is below both VAEs on {', '.join(behind)}: at this budget and these settings "
                         "there is no gap to narrow there (negative gaps).")
    if has["simvae"] and has["simclr"]:
        lines.append("- Style, SimVAE beats SimCLR: " + "; ".join(
            f"{label}: {verdict(table[dataset, 'simvae'][label], table[dataset, 'simclr'][label])}"
            for label in style))
    if has["simvae"] and has["vae"]:
        lines.append("- Style, SimVAE against the VAE (not a claim of the paper; for reference): " + "; ".join(
            f"{label}: {verdict(table[dataset, 'simvae'][label], table[dataset, 'vae'][label])}" for label in style))
    return lines


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, no GPU used" + (", CUDA present" if torch.cuda.is_available() else "")


def write_runs_csv(results, path):
    fields = ["dataset", "method", "seed", "epochs", "train_seconds", "seconds", *(label for _, label, _ in METRICS)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for r in results:
            writer.writerow({"dataset": r["dataset"], "method": r["method"], "seed": r["config"]["seed"],
                             "epochs": r["epochs"], "train_seconds": f"{r['train_seconds']:.1f}",
                             "seconds": f"{r['seconds']:.1f}",
                             **{label: f"{value(r, p):.4f}" for _, label, p in METRICS}})


def plot(table, datasets, methods, path):
    """One row per dataset, content and style panels: bars of the mean over seeds, whiskers ± one std."""
    fig, axes = plt.subplots(len(datasets), 2, figsize=(15, 3.6 * len(datasets)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    width = 0.8 / len(methods)
    for row, dataset in zip(axes, datasets):
        for ax, group in zip(row, ("content", "style")):
            labels = [label for g, label, _ in METRICS if g == group]
            for k, method in enumerate(methods):
                stats = [mean_std(table[dataset, method][label]) for label in labels]
                ax.bar([i + (k - (len(methods) - 1) / 2) * width for i in range(len(labels))],
                       [m for m, _ in stats], width, yerr=[0 if math.isnan(s) else s for _, s in stats],
                       capsize=3, label=METHOD_NAMES[method])
            ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
            ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
            ax.axhline(0, color="black", linewidth=0.5)
            ax.set_title(f"{DATASET_NAMES[dataset]}: {group} (test)")
            ax.grid(axis="y", alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(table, results, reused, args, command, started, finished, notes):
    datasets = [d for d in args.datasets if any((d, m) in table for m in args.methods)]
    seeds = sorted({r["config"]["seed"] for r in results})
    config = results[0]["config"]
    wall = finished - started
    lines = [
        "# Reproduction: SimVAE vs VAE vs SimCLR on FashionMNIST and MNIST, content and style",
        "",
        f"Written by `benchmarks/reproduce.py` (simvae_fast {git_version()}) on {finished:%Y-%m-%d}; this "
        f"invocation ran {started:%H:%M}–{finished:%H:%M} UTC ({wall.total_seconds() / 60:.0f} min) and reused "
        f"{reused} of the {len(results)} runs from an earlier one; the runs took {sum(r['seconds'] for r in results) / 60:.0f} min "
        "of one-thread compute in all (training and probes).",
        "",
        f"- Command: `{command}`" + (" (what `make reproduce` runs)" if command.endswith("reproduce.py") else "") +
        f", after `simvae-fast data fetch` of {' and '.join(datasets)} (Debian's and npm's packages).",
        f"- Machine: {machine()}; torch {torch.__version__}; {args.jobs} runs at a time, one thread each.",
        f"- Budget per run: {args.epochs} training epochs"
        f"{'' if args.limit_train is None else f' of the first {args.limit_train} training images'}, "
        f"batch {config['batch_size']} views = {config['batch_size'] // config['views']} images × {config['views']} "
        "views; "
        f"probes {args.probe_epochs} epochs; seeds {', '.join(map(str, seeds))} (the same for every method). "
        "The paper trains 400 epochs.",
        "- Same for every method: MLP encoder 784-2000-500-500, D = 10, J = 2 official augmentations (crop "
        "0.4–1, vertical flip), Adam lr 8e-5 (eps 1e-4), loss summed over the batch; SimCLR: temperature 0.5, "
        "projection head, representation h. Content probes read non-augmented test images; style probes read "
        "one official augmentation of each image (simvae_fast/style.py); test scores at the validation-chosen "
        "probe epoch.",
        "- Cells: mean ± standard deviation over seeds of the test score (accuracy, or R²: 1 is perfect, ≤ 0 "
        "is no better than the mean).",
    ]
    for dataset in datasets:
        methods = [m for m in args.methods if (dataset, m) in table]
        n = len(table[dataset, methods[0]][METRICS[0][1]])
        lines += ["", f"## {DATASET_NAMES[dataset]} ({n} seed{'s' if n > 1 else ''})", "",
                  "| method | " + " | ".join(label for _, label, _ in METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        for method in methods:
            lines.append(f"| {METHOD_NAMES[method]} | " +
                         " | ".join(fmt(table[dataset, method][label]) for _, label, _ in METRICS) + " |")
        lines += ["", f"### Claims on {DATASET_NAMES[dataset]}", "", *claims(table, dataset, methods)]
    lines += ["", "![test scores](reproduction.png)", "",
              "Every run: [reproduction_runs.csv](reproduction_runs.csv). Claim verdicts: reproduce_report.py's "
              "docstring (d: difference of the means, se: its standard error over seeds).", ""]
    if notes is not None:
        lines += ["## Notes (hand-written, from reproduction_notes.md)", "", notes.strip(), ""]
    return "\n".join(lines)


def write_outputs(results, reused, args, command, started, finished, out_dir):
    """Write reproduction.md (with out_dir/reproduction_notes.md appended when it exists), reproduction_runs.csv
    and reproduction.png into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    notes_file = out_dir / "reproduction_notes.md"
    notes = notes_file.read_text() if notes_file.is_file() else None
    table = summarise(results)
    datasets = [d for d in args.datasets if any((d, m) in table for m in args.methods)]
    paths = out_dir / "reproduction.md", out_dir / "reproduction_runs.csv", out_dir / "reproduction.png"
    paths[0].write_text(markdown(table, results, reused, args, command, started, finished, notes))
    write_runs_csv(results, paths[1])
    plot(table, datasets, [m for m in args.methods if any((d, m) in table for d in datasets)], paths[2])
    return paths
