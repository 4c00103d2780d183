"""The benchmark harness end to end on a tiny case: rows, speedups, CSV and plot."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import harness  # noqa: E402
from cases import CASES  # noqa: E402
from plot import plot_csv  # noqa: E402


def test_measure_writes_rows_csv_and_plot(tmp_path):
    case = CASES["prior"][0]
    device = torch.device("cpu")
    rows = []
    for provider in ("reference", "compile"):
        rows += harness.measure(case, provider, device, torch.float32, warmup=1, rep=3)
    harness.stamp(harness.add_speedups(rows), device)
    assert {(r["provider"], r["mode"]) for r in rows} == {(p, m) for p in ("reference", "compile")
                                                          for m in harness.MODES}
    for r in rows:
        assert 0 < r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["peak_mb"] >= 0 and r["command"] and r["date"]
    assert all(r["speedup_vs_reference"] == 1.0 for r in rows if r["provider"] == "reference")

    csv_path, png_path = tmp_path / "r.csv", tmp_path / "r.png"
    harness.append_csv(str(csv_path), rows)
    harness.append_csv(str(csv_path), rows)
    assert len(harness.read_csv(str(csv_path))) == 2 * len(rows)
    plot_csv(str(csv_path), str(png_path))
    assert png_path.stat().st_size > 10_000


def test_peak_memory_counts_a_temporary():
    from simvae_fast.profiling import peak_memory_bytes

    x = torch.randn(512, 64)
    _, peak = peak_memory_bytes(lambda: (x @ x.T).sum(), "cpu")
    assert 512 * 512 * 4 <= peak < 2 * 512 * 512 * 4
