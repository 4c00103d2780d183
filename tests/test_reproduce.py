"""benchmarks/reproduce.py end to end at a tiny budget (one seed, one epoch, a few hundred synthetic images): every
run trains and is evaluated, the report, run CSV and chart are written, and a second invocation reuses the runs
and appends the hand-written notes."""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def reproduce(data_root, tmp_path, *extra):
    args = ["--seeds", "1", "--epochs", "1", "--probe-epochs", "2", "--limit-train", "192", "--val-size", "64",
            "--limit-test", "64", "--no-verify", "--data-root", str(data_root), "--runs", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), *extra]
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), *args], capture_output=True,
                          text=True, timeout=600)


def test_tiny_reproduction(data_root, tmp_path):
    done = reproduce(data_root, tmp_path, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    results = tmp_path / "results"
    with open(results / "reproduction_runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["dataset"], r["method"]) for r in rows) == sorted(
        (d, m) for d in ("fashion-mnist", "mnist") for m in ("simvae", "vae", "simclr"))
    for row in rows:
        assert row["seed"] == "1234" and row["epochs"] == "1"
        for label in ("linear acc", "MLP acc", "kNN acc", "flip acc, linear", "flip acc, MLP"):
            assert 0.0 <= float(row[label]) <= 1.0
        for label in ("scale R², linear", "position R², MLP"):
            assert float(row[label]) <= 1.0
    report = (results / "reproduction.md").read_text()
    for heading in ("## FashionMNIST (1 seed)", "## MNIST (1 seed)", "### Claims on FashionMNIST",
                    "### Claims on MNIST", "| SimVAE |", "| VAE |", "| SimCLR |", "Content, SimVAE beats the VAE",
                    "Style, SimVAE beats SimCLR", "one seed, no noise estimate"):
        assert heading in report
    assert "--epochs 1" in report and "reused 0 of the 6 runs" in report  # the command that made it
    assert (results / "reproduction.png").stat().st_size > 10_000

    (results / "reproduction_notes.md").write_text("What was tried: nothing else.\n")
    again = reproduce(data_root, tmp_path, "--datasets", "mnist", "--methods", "vae", "--jobs", "1")
    assert again.returncode == 0, again.stderr
    assert "1 of 1 runs already done; 0 to go" in again.stdout
    report = (results / "reproduction.md").read_text()
    assert "reused 1 of the 1 runs" in report and report.rstrip().endswith("What was tried: nothing else.")


def test_missing_dataset_names_the_fetch_command(isolated, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import reproduce as script

    assert script.main(["--datasets", "mnist", "--runs", str(isolated / "runs")]) == 2
    assert "simvae-fast data fetch mnist" in capsys.readouterr().err
    assert not (isolated / "runs").exists()
