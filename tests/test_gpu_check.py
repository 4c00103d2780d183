"""benchmarks/gpu_check.sh on the CPU: `--dry-run` walks every phase with tiny shapes (what CI can test of the
GPU run), and the phase bookkeeping holds when phases fail or the time budget runs out.

Shown to fail: with `record` left out of the script's phase() function, the summary has no phase rows and both
tests fail; with the summary moved before the phases, test_dry_run_walks_every_phase fails (not last); a bench
phase writing nothing (run.py --csv /dev/null) fails the CSV assertion.
"""
import csv
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
PHASES = ["build", "bench-info_nce-bf16", "bench-info_nce-fp16", "bench-info_nce-fp32", "bench-latent", "roofline",
          "gpu-tests", "sanitize-program", "plot"]


def run(tmp_path, *args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    environment.update({"OUT": str(tmp_path), "PYTHON": sys.executable, **env})
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=environment, timeout=3000)


def phase_states(log):
    """{phase: state} from the summary's phase table (the last table of the log)."""
    table = log[log.rindex("| phase | state |"):]
    rows = re.finditer(r"^\| (\S+) \| ([^|]+) \|", table, re.M)
    return {m.group(1): m.group(2).strip() for m in rows if m.group(1) != "phase" and not m.group(1).startswith("---")}


def test_dry_run_walks_every_phase(tmp_path):
    done = run(tmp_path, "--dry-run")
    log = done.stdout
    assert done.returncode == 0, log[-4000:] + done.stderr[-2000:]
    assert log.startswith("== versions") and "torch " in log and "triton " in log and "pytest " in log
    states = phase_states(log)
    assert list(states) == PHASES and all(s == "ok" for s in states.values()), states
    assert log.rstrip().splitlines()[-1].startswith("gpu_check: all phases ok")
    assert log.index("== summary") > max(log.index(f"== {p}") for p in PHASES)  # the summary comes last
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {r["op"] for r in rows} == {"info_nce", "latent"}
    assert {r["dtype"] for r in rows if r["op"] == "info_nce"} == {"bfloat16", "float16", "float32"}
    assert all(float(r["tflops"]) > 0 for r in rows if r["op"] == "info_nce")
    assert all(float(r["gbps"]) > 0 for r in rows if r["op"] == "latent")
    assert sorted(os.listdir(tmp_path)) == ["gpu_check.log", "results.csv", "results.png", "roofline.md", "summary.md"]
    assert (tmp_path / "summary.md").read_text().strip() in log
    assert "GPU tests" in log and "skipped" in log  # the GPU tests were collected, and skip without a GPU


def test_failed_and_skipped_phases_still_summarised(tmp_path):
    """A Python that cannot run anything: every phase fails, yet the summary lists each one, the exit is 1;
    with no budget left, every phase is skipped."""
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    out = tmp_path / "out"
    done = run(out, "--dry-run", PYTHON=str(broken))
    assert done.returncode == 1
    states = phase_states(done.stdout)
    assert "build" in states and all(s.startswith(("FAILED", "skipped")) for s in states.values()), states
    assert done.stdout.rstrip().splitlines()[-1].startswith("gpu_check: some phases failed")

    done = run(tmp_path / "budget", "--dry-run", GPU_CHECK_BUDGET_S="1")
    states = phase_states(done.stdout)
    assert done.returncode == 0 and states and all(s.startswith("skipped") for s in states.values()), states


def test_bad_argument(tmp_path):
    done = run(tmp_path, "--bogus")
    assert done.returncode == 2 and "usage" in done.stderr


def test_gpu_run_benchmarks_one_info_nce_case():
    """The GPU run's InfoNCE shape pattern ('...$': the label ends there) picks the J = 2 normalized case at
    N = 8192 only (one torch.compile build in the bf16 phase, as its estimate assumes), not J = 4 or
    normalize=False."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import run

    pattern = re.search(r"DEVICE=cuda; NCE_SHAPE='([^']+)'", open(SCRIPT).read()).group(1)
    labels = [case.shape for case in run.CASES["info_nce"]]
    assert [label for label in labels if run._matches(label, pattern)] == ["N=8192,D=128,J=2"]
    assert sum(run._matches(label, "N=8192,") for label in labels) == 3  # without '$': a substring, as before
