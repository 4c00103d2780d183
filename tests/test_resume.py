"""Killed mid-epoch (SIGKILL) or stopped by Ctrl-C (SIGINT), then --resume: the run ends exactly as an
uninterrupted run with the same seed (metrics log, probe results and weights, BatchNorm statistics included):
for the MLP on grey images and for the ResNet on CIFAR-10-shaped images (colour jitter from the same generator)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from simvae_fast import data
from simvae_fast.app import cifar10
from simvae_fast.train import FAULT_ENV

# 3 steps an epoch, 6 in all: 192 grey images, 64 groups of 2 views a step; or 24 RGB images, 8 groups a step
ARGS = ["--val-size", "32", "--limit-test", "32", "--epochs", "2", "--probe-epochs", "2", "--log-every", "2",
        "--no-verify", "--seed", "7"]
DATASETS = {"mnist": ["--limit-train", "192"],
            "cifar10": ["--limit-train", "24", "--batch-size", "16", "--latent-dim", "8"]}


def run_cli(*args, fault=None):
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "simvae_fast", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module", params=list(DATASETS))
def runs(tmp_path_factory, request):
    """The data, and a reference run trained without interruption."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(1)
    if request.param == "mnist":
        data.write_dataset(root / "data" / "mnist", rng.integers(0, 256, (224, 28, 28)), rng.integers(0, 10, 224),
                           rng.integers(0, 256, (32, 28, 28)), rng.integers(0, 10, 32))
    else:
        cifar10.write_dataset(root / "data", rng.integers(0, 256, (56, 3, 32, 32)), rng.integers(0, 10, 56),
                              rng.integers(0, 256, (32, 3, 32, 32)), rng.integers(0, 10, 32))
    common = ["--dataset", request.param, "--data-root", str(root / "data"), *ARGS, *DATASETS[request.param]]
    done = run_cli("train", *common, "--out", str(root / "uninterrupted"))
    assert done.returncode == 0, done.stderr
    return root, common


def assert_same_run(a, b):
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    assert (a / "results.json").read_text() == (b / "results.json").read_text()
    wa = torch.load(a / "checkpoint.pt", weights_only=False)
    wb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert wa["position"] == wb["position"] == {"epoch": 2, "batch": 0, "step": 6}
    for name, tensor in wa["model"].items():
        assert torch.equal(tensor, wb["model"][name]), name


def test_sigkill_mid_epoch_then_resume(runs):
    root, common = runs
    out = root / "killed"
    killed = run_cli("train", *common, "--out", str(out), fault="5:KILL")  # step 5: in the second epoch
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(out / "checkpoint.pt", weights_only=False)["position"]["step"] == 3  # the end of epoch 1
    assert "5," in (out / "metrics.csv").read_text()  # a row the checkpoint never saw, to be dropped on resume

    resumed = run_cli("train", "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(root / "uninterrupted", out)


def test_ctrl_c_saves_then_resume(runs):
    root, common = runs
    out = root / "interrupted"
    stopped = run_cli("train", *common, "--out", str(out), fault="4:INT")
    assert stopped.returncode == 130, stopped.stderr
    assert "--resume" in stopped.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=False)["position"] == {"epoch": 1, "batch": 1, "step": 4}
    assert not (out / "checkpoint.pt.tmp").exists()

    resumed = run_cli("train", "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(root / "uninterrupted", out)
