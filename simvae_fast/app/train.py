"""Training loop for SimVAE, the VAE and SimCLR on FashionMNIST, MNIST, CIFAR-10 and CelebA (the CLI's `train`).

Per-dataset defaults (DATASET_DEFAULTS, the official code's; resolved() fills what the Config leaves None): grey
sets: the MLP, D = 10, Bernoulli likelihood; RGB sets: the ResNet pair, D = 64, Gaussian likelihood (fixed
log-variance -4.6) on sigmoid outputs. On CUDA the ResNet runs in channels_last memory format.

A run directory holds config.json, metrics.csv (per-view loss and parts every `log_every` steps), checkpoint.pt
(written atomically after every epoch and on Ctrl-C), and after evaluation results.json and PNGs.

Randomness: the model's initialisation comes from torch.manual_seed(seed); everything after it from seeds derived
from (seed, stream, index): the data order of epoch e, the augmentations of step s (a generator on the training
device, reseeded per step) and the latent noise of step s (the fused op's counter-based noise). So the state to
save is (model, optimiser, epoch, step), and a run resumed from any checkpoint continues exactly as it would have.
There is no host synchronisation per step: losses are summed on the device and read every `log_every` steps.

Distributed (torchrun, `train --distributed`): each of the W processes takes an equal share of every global batch
of `batch_size` views and the run takes the same optimisation steps as one process would, with the same gradients
(up to the order of float sums): every process augments the whole global batch from the step's seed and keeps its
share of the views, the latent noise of its share is the counter range the share has in the whole batch, SimCLR's
InfoNCE sees every process's rows, and the losses are scaled so that DDP's average of the gradients is the
single-process gradient (see local_loss_scale). Only process 0 writes files and prints.
"""
import contextlib
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
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from simvae_fast.app import augment, data
from simvae_fast.app.methods import build_method
from simvae_fast.app.probes import PROBE_EPOCHS

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
    latent_dim: int = None  # None: the dataset's default (DATASET_DEFAULTS)
    architecture: str = None
    likelihood: str = None
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
    probe_epochs: int = PROBE_EPOCHS


GREY_DEFAULTS = {"architecture": "mlp", "latent_dim": 10, "likelihood": "bernoulli"}
RGB_DEFAULTS = {"architecture": "resnet", "latent_dim": 64, "likelihood": "gaussian"}
DATASET_DEFAULTS = {name: RGB_DEFAULTS if name in data.RGB else GREY_DEFAULTS for name in data.NAMES}


def resolved(cfg):
    """cfg with the options it leaves None set to its dataset's defaults."""
    data.check_name(cfg.dataset)
    defaults = DATASET_DEFAULTS[cfg.dataset]
    return dataclasses.replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


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
    if dist.is_initialized() and cfg.architecture == "resnet" and resolve_device(cfg.device).type != "cuda":
        raise ValueError("--distributed: the resnet's BatchNorm is synchronised over the processes (SyncBatchNorm), "
                         "which needs CUDA; train it on one process on the CPU")


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


def build_model(cfg, image_shape, gather_distributed=False):
    cfg = resolved(cfg)
    return build_method(
        cfg.method, image_shape=image_shape, latent_dim=cfg.latent_dim, architecture=cfg.architecture,
        prior=cfg.prior, likelihood=cfg.likelihood, sigma2=cfg.sigma2, beta=cfg.beta, temperature=cfg.temperature,
        reduction=cfg.reduction, backend=cfg.backend, gather_distributed=gather_distributed,
    )


# --- distributed runs (torchrun) ---

def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


@contextlib.contextmanager
def process_group(device):
    """The default process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
    nccl on cuda:LOCAL_RANK for CUDA runs, gloo on the CPU; destroyed on exit."""
    if "LOCAL_RANK" not in os.environ:
        raise ValueError("--distributed: no torchrun environment (LOCAL_RANK); launch with "
                         "`torchrun --nproc_per_node=K -m simvae_fast train --distributed ...`")
    if resolve_device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl", device_id=torch.device("cuda", int(os.environ["LOCAL_RANK"])))
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device):
    """This process's device: cuda:LOCAL_RANK for a distributed CUDA run."""
    device = resolve_device(device)
    if dist.is_initialized() and device.type == "cuda":
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def check_split(n_images, groups, world):
    """Every step's groups must split evenly over the processes (the last, shorter step's too)."""
    last = n_images % groups
    if groups % world or last % world:
        raise ValueError(f"batch_size: with --distributed every step's groups (batch_size / views = {groups}"
                         f"{f', and {last} in the last step of an epoch' if last else ''}) are split evenly over "
                         f"the {world} processes; choose a --batch-size (or a training-set size) they divide")


def local_loss_scale(reduction, world):
    """The factor on this process's loss so that DDP's gradient average gives the single-process gradient.

    DDP averages the parameter gradients over the W processes. "mean": each process's loss is the mean over its
    own N / W views (for SimCLR over its own rows, against every process's rows, whose gradient all_gather sends
    back: see simvae_fast.distributed), and the average of the W local means is the mean over all N: factor 1.
    "sum": the single-process loss is the sum of the W local sums, W times their average: factor W.
    """
    return float(world) if reduction == "sum" else 1.0


def run_on_main(fn, *args):
    """fn(*args) on process 0 only (say, preparing the run directory); its error is raised on every process."""
    error = None
    if is_main_process():
        try:
            fn(*args)
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            error = err
    if dist.is_initialized():
        shared = [error]
        dist.broadcast_object_list(shared)
        error = shared[0]
    if error is not None:
        raise error


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
    or None when stopped by Ctrl-C (after saving a checkpoint). Inside process_group (torchrun), this process
    trains its share of every batch; only process 0 writes the run directory."""
    cfg = resolved(cfg)
    check_config(cfg)
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    main_process = rank == 0
    run_dir, device = Path(cfg.out), local_device(cfg.device)
    dataset = load_dataset(cfg)
    images = dataset.train.images.to(device)
    n_images, groups = len(images), cfg.batch_size // cfg.views
    steps_per_epoch = math.ceil(n_images / groups)
    check_split(n_images, groups, world)
    run_on_main(prepare_run_dir, cfg.out, resume, overwrite)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tuple(images.shape[1:]), gather_distributed=world > 1).to(device)
    channels_last = device.type == "cuda" and cfg.architecture == "resnet"
    if channels_last:  # weights in channels_last make cuDNN's convolutions produce and take that layout throughout
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and cfg.architecture == "resnet":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp_model = DistributedDataParallel(model) if world > 1 else model
    loss_scale = local_loss_scale(cfg.reduction, world)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    fields = ["loss", *model.PARTS]
    position = {"epoch": 0, "batch": 0, "step": 0}
    sums, count = torch.zeros(len(fields), device=device), 0  # logging accumulators
    log = None  # metrics.csv, written by process 0
    if resume:
        ckpt = torch.load(run_dir / CHECKPOINT_FILE, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        position, sums, count = ckpt["position"], ckpt["log_sums"].to(device), ckpt["log_count"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())  # map_location moved it to the device
        log = MetricsLog(run_dir / METRICS_FILE, fields, keep_until_step=position["step"]) if main_process else None
    elif main_process:
        with open(run_dir / CONFIG_FILE, "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
        log = MetricsLog(run_dir / METRICS_FILE, fields)

    def reduced(t):
        """The average over the processes of a device tensor (host synchronisation: at logging time only)."""
        if world > 1:
            t = t.clone()
            dist.all_reduce(t)  # a sum: gloo has no average
            t /= world
        return t

    def checkpoint():
        # The logging sums saved are process 0's; under --distributed checkpoints are written at the end of
        # an epoch only, right after a metrics row, when every process's sums are zero.
        if main_process:
            save_checkpoint(run_dir / CHECKPOINT_FILE, {
                "config": dataclasses.asdict(cfg), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "position": dict(position), "log_sums": sums.cpu(),
                "log_count": count, "torch_rng": torch.get_rng_state(),
            })
        if world > 1:
            dist.barrier()

    fault_step, _, fault_signal = os.environ.get(FAULT_ENV, "0").partition(":")
    augment_generator = torch.Generator(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    model.train()
    # Ctrl-C under torchrun reaches every process at its own step, so there it stops the run (torchrun ends
    # the processes) and --resume continues from the last end-of-epoch checkpoint.
    flag = StopFlag()
    with flag if world == 1 else contextlib.nullcontext():
        for epoch in range(position["epoch"], cfg.epochs):
            order_generator = torch.Generator().manual_seed(derive_seed(cfg.seed, STREAM_ORDER, epoch))
            order = torch.randperm(n_images, generator=order_generator).to(device)
            epoch_sum, epoch_steps, started = torch.zeros((), device=device), 0, time.time()
            bar = tqdm(total=steps_per_epoch, initial=position["batch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", dynamic_ncols=True, leave=False, disable=not main_process)
            for batch in range(position["batch"], steps_per_epoch):
                step = position["step"]
                augment_generator.manual_seed(derive_seed(cfg.seed, STREAM_AUGMENT, step))
                views = augment.make_views(images[order[batch * groups:(batch + 1) * groups]], cfg.views,
                                           cfg.augment, augment_generator)
                share = views.shape[0] // world  # the whole batch's views, as one process draws them: our share
                views = views[rank * share:(rank + 1) * share]
                with autocast:  # the noise of our share's latents [share, J, D] is their counter range in the batch
                    loss, parts = ddp_model(views, seed=derive_seed(cfg.seed, STREAM_NOISE, step),
                                            offset=rank * share * cfg.views * cfg.latent_dim)
                optimizer.zero_grad(set_to_none=True)
                (loss * loss_scale if loss_scale != 1.0 else loss).backward()
                optimizer.step()

                values = torch.stack([loss.detach(), *(p.detach() for p in parts.values())]).float()
                scale = 1.0 / (views.shape[0] * views.shape[1]) if cfg.reduction == "sum" else 1.0  # per view
                sums, count = sums + values * scale, count + 1
                epoch_sum, epoch_steps = epoch_sum + values[0] * scale, epoch_steps + 1
                position.update(batch=batch + 1, step=step + 1)
                bar.update()
                if position["step"] % cfg.log_every == 0 or batch + 1 == steps_per_epoch:
                    means = (reduced(sums) / count).tolist()  # the only host synchronisation of the loop
                    if main_process:
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
            epoch_loss = reduced(epoch_sum).item() / epoch_steps
            if main_process:
                tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: loss per view {epoch_loss:.4f} "
                           f"({time.time() - started:.0f} s)")
    return model, dataset, device
