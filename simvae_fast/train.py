"""Training loop for SimVAE, the VAE and SimCLR on FashionMNIST / MNIST (the CLI's `train`).

A run directory holds config.json, metrics.csv (per-view loss and parts every `log_every` steps), checkpoint.pt
(written atomically after every epoch and on Ctrl-C), and after evaluation results.json and PNGs.

Randomness: the model's initialisation comes from torch.manual_seed(seed); everything after it from seeds derived
from (seed, stream, index): the data order of epoch e, the augmentations of step s (a generator on the training
device, reseeded per step) and the latent noise of step s (the fused op's counter-based noise). So the state to
save is (model, optimiser, epoch, step), and a run resumed from any checkpoint continues exactly as it would have.
There is no host synchronisation per step: losses are summed on the device and read every `log_every` steps.
"""
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from simvae_fast import augment, data
from simvae_fast.methods import build_method

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.json", "metrics.csv", "checkpoint.pt"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, "results.json", "loss.png", "reconstructions.png")
# Fault injection for the resume tests: "STEP" or "STEP:SIGNAL" (KILL by default, or INT for a Ctrl-C) sends
# that signal to this process right after global step STEP (1-based) completes.
FAULT_ENV = "SIMVAE_FAST_SIGNAL_AT_STEP"
DEVICES = ("auto", "cpu", "cuda")
STREAM_ORDER, STREAM_AUGMENT, STREAM_NOISE = 1, 2, 3


@dataclasses.dataclass
class Config:
    method: str = "simvae"
    dataset: str = "fashion-mnist"
    out: str = "runs/simvae-fashion-mnist"
    data_root: str = None
    epochs: int = 4  # `make demo` budget: about 70 s an epoch on 2 idle CPU cores
    batch_size: int = 128  # views per step: batch_size / views groups of `views` augmentations
    views: int = 2
    latent_dim: int = 10
    architecture: str = "mlp"
    prior: str = "gaussian"  # simvae's grouped-view prior
    sigma2: float = 0.15
    beta: float = 1.0
    temperature: float = 0.5  # simclr
    reduction: str = "sum"
    augment: str = "official"
    lr: float = 8e-5
    adam_eps: float = 1e-4
    seed: int = 1234
    device: str = "auto"
    bf16: bool = False
    backend: str = "auto"
    val_size: int = 5000
    split_seed: int = 0
    limit_train: int = None
    limit_test: int = None
    verify: bool = True
    log_every: int = 50
    probe_epochs: int = 20


def derive_seed(seed, stream, index):
    """A seed in [0, 2**62) for item `index` of a random stream: splitmix64 of (seed, stream, index)."""
    mask = (1 << 64) - 1
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03 + index * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 2


def resolve_device(device):
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(device)


def check_config(cfg):
    """Errors naming the option for values the run cannot use (choices are checked where they are used)."""
    positive = ("epochs", "batch_size", "views", "latent_dim", "lr", "adam_eps", "sigma2", "temperature",
                "log_every", "probe_epochs", "val_size")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name}: expected a positive value, got {getattr(cfg, name)!r}")
    for name in ("limit_train", "limit_test"):
        if getattr(cfg, name) is not None and not getattr(cfg, name) > 0:
            raise ValueError(f"{name}: expected a positive number of images, got {getattr(cfg, name)!r}")
    if cfg.batch_size % cfg.views:
        raise ValueError(f"batch_size: expected a multiple of views ({cfg.views}), got {cfg.batch_size}")
    if cfg.method in ("simvae", "simclr") and cfg.views < 2:
        raise ValueError(f"views: {cfg.method} compares the views of an image and needs at least 2, got {cfg.views}")
    if cfg.bf16 and resolve_device(cfg.device).type != "cuda":
        raise ValueError("bf16: bfloat16 autocast is for CUDA devices; this run is on the CPU")
    if cfg.augment not in augment.RECIPES:
        raise ValueError(f"augment: expected one of {', '.join(map(repr, augment.RECIPES))}, got {cfg.augment!r}")
    data.check_name(cfg.dataset)


def load_config(run_dir):
    with open(Path(run_dir) / CONFIG_FILE) as f:
        return Config(**json.load(f))


def prepare_run_dir(out, resume=False, overwrite=False):
    """Refuse to write into an existing, non-empty run directory unless resuming or overwriting;
    --overwrite deletes only the files a run writes."""
    out = Path(out)
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_FILE} in {out}")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty: pass --resume to continue the run there, "
                                  "--overwrite to start it again, or another --out")
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def build_model(cfg, image_shape):
    return build_method(
        cfg.method, image_shape=image_shape, latent_dim=cfg.latent_dim, architecture=cfg.architecture,
        prior=cfg.prior, sigma2=cfg.sigma2, beta=cfg.beta, temperature=cfg.temperature,
        reduction=cfg.reduction, backend=cfg.backend,
    )


def load_dataset(cfg):
    return data.load(cfg.dataset, cfg.data_root, val_size=cfg.val_size, split_seed=cfg.split_seed,
                     limit_train=cfg.limit_train, limit_test=cfg.limit_test, verify=cfg.verify)


def save_checkpoint(path, state):
    """torch.save to a temporary file beside `path`, then os.replace: a crash leaves the old or the new file."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MetricsLog:
    """metrics.csv: one row per logging interval, per-view means of the loss and its parts."""

    def __init__(self, path, fields, keep_until_step=None):
        self.path, self.fields = Path(path), ["step", "epoch", *fields]
        rows = []
        if keep_until_step is not None and self.path.exists():  # resuming: drop rows the checkpoint has not seen
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


class StopFlag:
    """Ctrl-C (SIGINT) sets a flag the loop checks between steps; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def train(cfg, resume=False, overwrite=False):
    """Train per cfg into cfg.out (or continue it with resume=True); returns (model, dataset, device),
    or None when stopped by Ctrl-C (after saving a checkpoint)."""
    check_config(cfg)
    prepare_run_dir(cfg.out, resume, overwrite)
    run_dir, device = Path(cfg.out), resolve_device(cfg.device)
    dataset = load_dataset(cfg)
    images = dataset.train.images.to(device)
    n_images, groups = len(images), cfg.batch_size // cfg.views
    steps_per_epoch = math.ceil(n_images / groups)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tuple(images.shape[1:])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    fields = ["loss", *model.PARTS]
    position = {"epoch": 0, "batch": 0, "step": 0}
    sums, count = torch.zeros(len(fields), device=device), 0  # logging accumulators
    if resume:
        ckpt = torch.load(run_dir / CHECKPOINT_FILE, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        position, sums, count = ckpt["position"], ckpt["log_sums"].to(device), ckpt["log_count"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())  # map_location moved it to the device
        log = MetricsLog(run_dir / METRICS_FILE, fields, keep_until_step=position["step"])
    else:
        with open(run_dir / CONFIG_FILE, "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
        log = MetricsLog(run_dir / METRICS_FILE, fields)

    def checkpoint():
        save_checkpoint(run_dir / CHECKPOINT_FILE, {
            "config": dataclasses.asdict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "position": dict(position), "log_sums": sums.cpu(), "log_count": count,
            "torch_rng": torch.get_rng_state(),
        })

    fault_step, _, fault_signal = os.environ.get(FAULT_ENV, "0").partition(":")
    augment_generator = torch.Generator(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    model.train()
    with StopFlag() as flag:
        for epoch in range(position["epoch"], cfg.epochs):
            order_generator = torch.Generator().manual_seed(derive_seed(cfg.seed, STREAM_ORDER, epoch))
            order = torch.randperm(n_images, generator=order_generator).to(device)
            epoch_sum, epoch_steps, started = torch.zeros((), device=device), 0, time.time()
            bar = tqdm(total=steps_per_epoch, initial=position["batch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", dynamic_ncols=True, leave=False)
            for batch in range(position["batch"], steps_per_epoch):
                step = position["step"]
                augment_generator.manual_seed(derive_seed(cfg.seed, STREAM_AUGMENT, step))
                views = augment.make_views(images[order[batch * groups:(batch + 1) * groups]], cfg.views,
                                           cfg.augment, augment_generator)
                with autocast:
                    loss, parts = model(views, seed=derive_seed(cfg.seed, STREAM_NOISE, step))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

                values = torch.stack([loss.detach(), *(p.detach() for p in parts.values())]).float()
                scale = 1.0 / (views.shape[0] * views.shape[1]) if cfg.reduction == "sum" else 1.0  # per view
                sums, count = sums + values * scale, count + 1
                epoch_sum, epoch_steps = epoch_sum + values[0] * scale, epoch_steps + 1
                position.update(batch=batch + 1, step=step + 1)
                bar.update()
                if position["step"] % cfg.log_every == 0 or batch + 1 == steps_per_epoch:
                    means = (sums / count).tolist()  # the only host synchronisation of the loop
                    log.write({"step": position["step"], "epoch": epoch + 1, **dict(zip(fields, means))})
                    bar.set_postfix(loss=f"{means[0]:.3f}")
                    sums, count = torch.zeros_like(sums), 0
                if position["step"] == int(fault_step):
                    os.kill(os.getpid(), signal.Signals[f"SIG{fault_signal or 'KILL'}"])
                if flag.stop:
                    bar.close()
                    checkpoint()
                    tqdm.write(f"interrupted at step {position['step']}: checkpoint saved in {run_dir}; "
                               f"continue with `simvae-fast train --resume --out {run_dir}`", file=sys.stderr)
                    return None
            bar.close()
            position.update(epoch=epoch + 1, batch=0)
            checkpoint()
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: loss per view {epoch_sum.item() / epoch_steps:.4f} "
                       f"({time.time() - started:.0f} s)")
    return model, dataset, device
