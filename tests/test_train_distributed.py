"""`train --distributed` under torchrun (2 processes, gloo, CPU) trains like one process on the whole batch:
the same final weights and logged losses (up to the order of float sums)."""
import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from simvae_fast import data
from simvae_fast.cli import main
from simvae_fast.train import build_model, check_split, load_config

# 96 images, 32 groups of 2 views a step: 3 steps.
ARGS = ["--limit-train", "96", "--val-size", "16", "--limit-test", "16", "--epochs", "1", "--batch-size", "64",
        "--log-every", "1", "--no-verify", "--no-eval", "--seed", "3"]
# Adam's eps well above the gradients, so an update is about lr * gradient / eps, not Adam's scale-free
# lr * sign(gradient): a gradient scaled wrongly (say a missing factor world_size) changes the weights.
OPTIMISER = {"simvae": ["--lr", "1", "--adam-eps", "1000"], "simclr": ["--lr", "0.1", "--adam-eps", "1"]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    rng = np.random.default_rng(2)
    root = tmp_path_factory.mktemp("data")
    data.write_dataset(root / "mnist", rng.integers(0, 256, (112, 28, 28)), rng.integers(0, 10, 112),
                       rng.integers(0, 256, (16, 28, 28)), rng.integers(0, 10, 16))
    return root


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, processes):
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port())]
    done = subprocess.run([sys.executable, *launcher, "-m", "simvae_fast", "train", "--distributed", *args],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("method", ["simvae", "simclr"])
def test_two_processes_train_like_one(data_root, tmp_path, method):
    common = ["--method", method, "--dataset", "mnist", "--data-root", str(data_root), *ARGS,
              *OPTIMISER[method]]
    assert main(["train", *common, "--out", str(tmp_path / "one")]) == 0  # one process, here
    two = torchrun([*common, "--out", str(tmp_path / "two")], processes=2)
    assert two.stdout.count("epoch 1/1") == 1  # process 0 alone prints

    one_rows, two_rows = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in two_rows] == [1, 2, 3]
    for a, b in zip(one_rows, two_rows, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)

    cfg = load_config(tmp_path / "one")
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg, (1, 28, 28)).state_dict()
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["model"]
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["model"]
    assert one.keys() == two.keys()
    moved = max(float((one[k] - initial[k]).abs().max()) for k in one)
    assert moved > 1e-3  # the comparison below is not between two untrained models
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)


def test_groups_that_do_not_split_over_the_processes_are_refused():
    with pytest.raises(ValueError, match="--batch-size"):
        check_split(n_images=96, groups=30, world=4)
    with pytest.raises(ValueError, match="last step"):
        check_split(n_images=98, groups=32, world=4)  # 2 groups in the last step
    check_split(n_images=96, groups=32, world=4)
