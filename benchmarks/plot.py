"""Plot a benchmark CSV: per op, forward+backward median time (log scale, 20-80% bars) and peak memory
by shape and provider, from the newest row of each (op, shape, provider, dtype, device).

    python benchmarks/plot.py benchmarks/results/results.csv benchmarks/results/results.png
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness import PROVIDERS, read_csv  # noqa: E402


def latest_full_rows(rows):
    newest = {}
    for r in rows:
        if r["mode"] == "full":
            newest[(r["op"], r["shape"], r["provider"], r["dtype"], r["device"])] = r
    return list(newest.values())


def plot_csv(csv_path, png_path):
    rows = latest_full_rows(read_csv(csv_path))
    panels = sorted({(r["op"], r["dtype"], r["device"]) for r in rows})
    fig, axes = plt.subplots(2, len(panels), figsize=(5.5 * len(panels), 7.5), squeeze=False)
    for col, (op, dtype, device) in enumerate(panels):
        mine = [r for r in rows if (r["op"], r["dtype"], r["device"]) == (op, dtype, device)]
        shapes = list(dict.fromkeys(r["shape"] for r in mine))
        providers = [p for p in PROVIDERS if any(r["provider"] == p for r in mine)]
        width = 0.8 / len(providers)
        for i, provider in enumerate(providers):
            by_shape = {r["shape"]: r for r in mine if r["provider"] == provider}
            xs = [k + i * width for k, s in enumerate(shapes) if s in by_shape]
            got = [by_shape[s] for s in shapes if s in by_shape]
            med = [float(r["median_ms"]) for r in got]
            err = [[m - float(r["p20_ms"]) for m, r in zip(med, got)], [float(r["p80_ms"]) - m for m, r in zip(med, got)]]
            axes[0, col].bar(xs, med, width, yerr=err, label=provider)
            axes[1, col].bar(xs, [float(r["peak_mb"]) for r in got], width, label=provider)
        for row, label in ((0, "forward+backward, median ms"), (1, "peak extra memory, MB")):
            ax = axes[row, col]
            ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_xticks([k + 0.4 - width / 2 for k in range(len(shapes))], shapes, rotation=20, fontsize=8)
            ax.legend(fontsize=8)
        axes[0, col].set_title(f"{op} ({dtype}, {device})")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("png")
    a = p.parse_args()
    plot_csv(a.csv, a.png)
