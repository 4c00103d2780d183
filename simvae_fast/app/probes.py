"""The probe protocol shared by the content and the style evaluations: the official one (docs/math.md §5).

A probe reads a frozen representation [N, D]: linear Linear(D, K), or MLP Linear(D, D) -> ReLU -> Linear(D, K),
trained with Adam (lr 3e-4, betas (0.9, 0.999), eps 1e-8), batch 64, for `epochs` epochs (official: 200) on the
training split. Every epoch is scored on the validation split (held out of the training set) and on the test
split; the first epoch with the best validation score is chosen and the test score at that epoch reported: never
the best test epoch. A Task says what is predicted: class labels (cross-entropy, accuracy) or real targets (mean
squared error, R²).

Speed. 200 epochs at batch 64 are 156,000 steps on 50,000 images: at 64 x 64 the work of a step is nothing and
torch's per-call overhead is all (two nn.Module probes with autograd and torch.optim: 1.1 s an epoch on a quiet
core here, 9.5x the loop below on a busy one: benchmarks/results/images.md). So train_probes trains every probe of
one training split, the linear and the MLP probe of each task, in one loop over the same mini-batches, without
autograd, as three matrices (T tasks, O_t outputs of task t, O = sum O_t):
    W_in  [D + 1, O + T·D]   the linear heads and the MLP heads' first layers side by side (the last row: biases,
                             against a constant input column)
    W_out [T·D, O], b_out [O] the MLP heads' second layers, block-diagonal (task t's hidden units feed only its
                             outputs; the other entries have zero gradient, so Adam keeps them at exactly 0)
Forward: a = [x, 1] W_in, linear outputs a[:, :O], h = relu(a[:, O:]), MLP outputs h W_out + b_out. Backward of
the per-head mean losses: G = dL/d(outputs) (softmax - one-hot, or 2 (y - t) / O_t, over the batch size B),
dW_out = hᵀ G_mlp (masked), db_out = Σ G_mlp, dh = G_mlp W_outᵀ ⊙ [h > 0], dW_in = [x, 1]ᵀ [G_lin, dh]; then one
fused Adam step. FLOPs a step: 2·B·(D + 1)·(O + T·D) forward, 2·B·T·D·O for the MLP layer (x 3 with the backward),
and ~20 torch calls however many probes (Adam: torch.optim's fused kernel, torch._fused_adam_, without its Python
wrapper). Each probe's loss depends on its own parameters only and Adam is elementwise, so every probe gets
exactly the updates it would get trained alone as an nn.Module with torch.optim.Adam on the same batches
(tests/test_probes.py checks this in float64); initialisation is nn.Linear's U(±1/sqrt(D)).
"""
import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from simvae_fast.app.augment import to_float

PROBE_LR, PROBE_BATCH, PROBE_EPOCHS = 3e-4, 64, 200
PROBES = ("linear", "mlp")


@torch.no_grad()
def representations(model, images, device, batch=1024):
    """model.represent of images [N, C, H, W] (uint8, or float in [0, 1]) in batches, as float32 [N, D] on
    `device`."""
    model.eval()
    out = [model.represent(to_float(images[i:i + batch].to(device))).float() for i in range(0, len(images), batch)]
    return torch.cat(out)


def accuracy(predictions, labels):
    return (predictions.argmax(dim=1) == labels).float().mean().item()


def r_squared(predictions, targets):
    """Coefficient of determination 1 - SSE / SST of [N, K] targets, pooled over the K columns."""
    residual = (predictions - targets).square().sum()
    total = (targets - targets.mean(dim=0)).square().sum()
    return (1.0 - residual / total).item()


class Task(NamedTuple):
    """What a probe predicts: class labels [N] int64 ("acc", `outputs` classes) or real targets [N, outputs]
    ("r2"), reported as val_<metric> / test_<metric>."""
    metric: str
    outputs: int

    def target_matrix(self, targets, dtype):
        """What the loss compares the outputs with: one-hot rows, or the targets themselves."""
        if self.metric == "acc":
            return F.one_hot(targets, self.outputs).to(dtype)
        return targets.to(dtype).reshape(len(targets), self.outputs)

    def score(self, predictions, targets):
        return accuracy(predictions, targets) if self.metric == "acc" else r_squared(predictions, targets)


def classification(classes):
    return Task("acc", classes)


def regression(outputs):
    """Targets [N, outputs]: mean squared error, scored by R²."""
    return Task("r2", outputs)


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


class ProbeBank:
    """The linear and the MLP probe of every task, on features of width `dim` (module docstring)."""

    def __init__(self, tasks, dim, generator, dtype=torch.float32, device="cpu"):
        self.tasks, self.dim = dict(tasks), dim
        sizes = [task.outputs for task in self.tasks.values()]
        self.out_slices, start = {}, 0
        for name, size in zip(self.tasks, sizes):
            self.out_slices[name] = slice(start, start + size)
            start += size
        self.outputs, n_tasks = start, len(sizes)
        bound = dim ** -0.5  # nn.Linear's initialisation, weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))

        def uniform(*shape):
            return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)

        self.w_in = uniform(dim + 1, self.outputs + n_tasks * dim).to(device)
        self.mask = torch.zeros(n_tasks * dim, self.outputs, dtype=dtype, device=device)
        for t, sl in enumerate(self.out_slices.values()):
            self.mask[t * dim:(t + 1) * dim, sl] = 1
        self.w_out = (uniform(n_tasks * dim, self.outputs).to(device) * self.mask)
        self.b_out = uniform(self.outputs).to(device)
        self.params = [self.w_in, self.w_out, self.b_out]
        self.adam_state = ([torch.zeros_like(p) for p in self.params], [torch.zeros_like(p) for p in self.params],
                           [torch.zeros((), dtype=torch.float32, device=device) for _ in self.params])
        self.classification = [sl for name, sl in self.out_slices.items() if self.tasks[name].metric == "acc"]
        # dL/d(output) of a mean loss over the batch, before dividing by the batch size: 1 for cross-entropy
        # (softmax - one-hot), 2 / O_t for the squared error averaged over the O_t outputs of a regression task
        scale = torch.ones(self.outputs, dtype=dtype)
        for name, sl in self.out_slices.items():
            if self.tasks[name].metric != "acc":
                scale[sl] = 2.0 / self.tasks[name].outputs
        self.scale = scale.repeat(2).to(device)
        self.batch_scale = self.scale / PROBE_BATCH

    def forward(self, x1):
        """x1 [B, D + 1] (features and a column of ones) -> outputs [B, 2·O] (linear heads, then MLP heads), h."""
        a = x1 @ self.w_in
        h = a[:, self.outputs:].relu()
        return torch.cat([a[:, :self.outputs], torch.addmm(self.b_out, h, self.w_out)], dim=1), h

    def step(self, x1, y2):
        """One Adam step of every probe on a batch: x1 [B, D + 1], y2 [B, 2·O] the target matrices (twice)."""
        out, h = self.forward(x1)
        heads = out.view(len(x1), 2, self.outputs)  # [B, linear | MLP, O]: one softmax per task for both heads
        for sl in self.classification:
            heads[:, :, sl] = heads[:, :, sl].softmax(dim=2)
        g = out.sub_(y2).mul_(self.batch_scale if len(x1) == PROBE_BATCH else self.scale / len(x1))
        g_lin, g_mlp = g[:, :self.outputs], g[:, self.outputs:]
        grads = [None, (h.T @ g_mlp).mul_(self.mask), g_mlp.sum(dim=0)]
        dh = torch.ops.aten.threshold_backward(g_mlp @ self.w_out.T, h, 0)  # ⊙ [h > 0] in one call
        grads[0] = x1.T @ torch.cat([g_lin, dh], dim=1)
        # torch.optim.Adam(fused=True)'s own kernel, called directly: its Python wrapper cost 8x the kernel here
        torch._foreach_add_(self.adam_state[2], 1)  # the step counts, which the kernel reads, not writes
        torch._fused_adam_(self.params, grads, *self.adam_state[:2], [], self.adam_state[2], lr=PROBE_LR,
                           beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)

    def predictions(self, x1):
        """{(task, kind): outputs} for x1 [N, D + 1]."""
        out, _ = self.forward(x1)
        result = {}
        for name, sl in self.out_slices.items():
            result[name, "linear"] = out[:, sl]
            result[name, "mlp"] = out[:, sl.start + self.outputs:sl.stop + self.outputs]
        return result

    def module(self, name, kind):
        """Probe (name, kind) as it stands, as the nn.Module it is equivalent to."""
        sl, t = self.out_slices[name], list(self.tasks).index(name)
        d, like = self.dim, {"dtype": self.w_in.dtype, "device": self.w_in.device}
        with torch.no_grad():
            if kind == "linear":
                probe = nn.Linear(d, sl.stop - sl.start, **like)
                probe.weight.copy_(self.w_in[:d, sl].T)
                probe.bias.copy_(self.w_in[d, sl])
                return probe
            first, second = nn.Linear(d, d, **like), nn.Linear(d, sl.stop - sl.start, **like)
            hidden = slice(self.outputs + t * d, self.outputs + (t + 1) * d)
            first.weight.copy_(self.w_in[:d, hidden].T)
            first.bias.copy_(self.w_in[d, hidden])
            second.weight.copy_(self.w_out[t * d:(t + 1) * d, sl].T)
            second.bias.copy_(self.b_out[sl])
            return nn.Sequential(first, nn.ReLU(), second)


def _with_ones(features):
    return torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype, device=features.device)], 1)


@torch.no_grad()
def train_probes(tasks, train, val, test, epochs=PROBE_EPOCHS, seed=0):
    """Train the linear and the MLP probe of every task on one training split, all on the same mini-batches
    (on one thread on the CPU: one_thread_on_cpu).

    tasks: {name: Task}; train, val, test: (features [N, D], {name: targets}). Returns {name: {kind: result}},
    a result being the chosen epoch, its val_/test_ scores, `epochs` and the per-epoch history."""
    features = train[0]
    if len(features) == 0:
        raise ValueError("train: the probes need at least one training image")
    with one_thread_on_cpu(features.device):
        return _train_probes(tasks, train, val, test, epochs, seed)


def _train_probes(tasks, train, val, test, epochs, seed):
    features, targets = train
    dtype, device = features.dtype, features.device
    generator = torch.Generator().manual_seed(seed)
    bank = ProbeBank(tasks, features.shape[1], generator, dtype, device)
    x1 = _with_ones(features)
    y = torch.cat([task.target_matrix(targets[name], dtype) for name, task in bank.tasks.items()], dim=1)
    y2 = torch.cat([y, y], dim=1)
    scored = {"val": (_with_ones(val[0]), val[1]), "test": (_with_ones(test[0]), test[1])}
    order_generator = torch.Generator().manual_seed(seed)
    history = {(name, kind): [] for name in bank.tasks for kind in PROBES}
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(x1), generator=order_generator).to(device).split(PROBE_BATCH):
            bank.step(x1.index_select(0, idx), y2.index_select(0, idx))
        scores = {split: bank.predictions(x) for split, (x, _) in scored.items()}
        for (name, kind), rows in history.items():
            task = bank.tasks[name]
            rows.append({"epoch": epoch, **{f"{split}_{task.metric}": task.score(scores[split][name, kind],
                                                                                  scored[split][1][name])
                                            for split in scored}})
    results = {name: {} for name in bank.tasks}
    for (name, kind), rows in history.items():
        val_key = f"val_{bank.tasks[name].metric}"
        chosen = max(rows, key=lambda row: row[val_key])  # the first epoch with the best validation score
        results[name][kind] = {**chosen, "epochs": epochs, "history": rows}
    return results
