"""The probe protocol shared by the content and the style evaluations.

A probe reads a frozen representation: linear Linear(D, K), or MLP Linear(D, D) -> ReLU -> Linear(D, K), trained
with Adam (lr 3e-4), batch 64, for a number of epochs on the training split. The epoch is chosen by the score on
the validation split (held out of the training set) and the test score is reported at that epoch: never the best
test epoch. A Task says what is predicted: class labels (cross-entropy, accuracy) or real targets (mean squared
error, R²).
"""
import contextlib
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from simvae_fast.augment import to_float

PROBE_LR, PROBE_BATCH = 3e-4, 64
PROBES = ("linear", "mlp")


@torch.no_grad()
def representations(model, images, device, batch=1024):
    """model.represent of images [N, C, H, W] (uint8, or float in [0, 1]) in batches, as float32 [N, D] on
    `device`."""
    model.eval()
    out = [model.represent(to_float(images[i:i + batch].to(device))).float() for i in range(0, len(images), batch)]
    return torch.cat(out)


def make_probe(kind, dim, outputs):
    if kind == "linear":
        return nn.Linear(dim, outputs)
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, outputs))


def accuracy(predictions, labels):
    return (predictions.argmax(dim=1) == labels).float().mean().item()


def r_squared(predictions, targets):
    """Coefficient of determination 1 - SSE / SST of [N, K] targets, pooled over the K columns."""
    residual = (predictions - targets).square().sum()
    total = (targets - targets.mean(dim=0)).square().sum()
    return (1.0 - residual / total).item()


class Task(NamedTuple):
    """What a probe predicts: `outputs` numbers per image, trained with `loss`, scored by `score` (higher is
    better) and reported as val_<metric> / test_<metric>."""
    metric: str
    outputs: int
    loss: Callable
    score: Callable


def classification(classes):
    return Task("acc", classes, F.cross_entropy, accuracy)


def regression(outputs):
    """Targets [N, outputs]: mean squared error, scored by R²."""
    return Task("r2", outputs, F.mse_loss, r_squared)


@torch.no_grad()
def score(probe, task, features, targets):
    return task.score(probe(features), targets)


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


def train_probe(kind, task, train, val, test, epochs, seed):
    """Train a probe for `task` on (features, targets) splits; returns the validation-chosen epoch and its
    scores."""
    features, targets = train
    device = features.device
    torch.manual_seed(seed)
    probe = make_probe(kind, features.shape[1], task.outputs).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR, fused=True)
    order_generator = torch.Generator().manual_seed(seed)
    val_key, test_key = f"val_{task.metric}", f"test_{task.metric}"
    history = []
    for epoch in range(1, epochs + 1):
        probe.train()
        for idx in torch.randperm(len(targets), generator=order_generator).to(device).split(PROBE_BATCH):
            loss = task.loss(probe(features[idx]), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        probe.eval()
        history.append({"epoch": epoch, val_key: score(probe, task, *val), test_key: score(probe, task, *test)})
    chosen = max(history, key=lambda h: h[val_key])  # the first epoch with the best validation score
    return {**chosen, "epochs": epochs, "history": history}
