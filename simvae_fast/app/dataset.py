"""What every dataset module (data.py: the grey sets; cifar10.py, celeba.py: the RGB sets) builds on: the Dataset
and Split records load() returns, the folders a dataset is looked for in, the user cache, MD5 checks, the seeded
validation hold-out, and the errors for a missing or corrupt file.
"""
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch

ENV_VAR = "SIMVAE_FAST_DATA"


class DatasetNotFoundError(FileNotFoundError):
    pass


class ChecksumError(ValueError):
    pass


class Split(NamedTuple):
    images: torch.Tensor  # [N, C, H, W] uint8
    labels: torch.Tensor  # [N, T] int64: column t is target t's class, -1 where the image has none


class Dataset(NamedTuple):
    name: str
    folder: Path
    targets: tuple  # ((target name, class names), ...): what the content probes predict, column by column
    train: Split  # the training set less the validation split
    val: Split  # held out of the training set (seeded) for choosing the probe epoch
    test: Split


def roots(data_root=None):
    """The folders a dataset is looked for in, in order: --data-root, $SIMVAE_FAST_DATA, the user cache."""
    return [Path(r) for r in (data_root, os.environ.get(ENV_VAR)) if r] + [cache_dir()]


def hold_out(train, val_size, split_seed, limit_train=None):
    """(train less the validation split, the validation split): `val_size` images of `train` (Split) drawn by a
    permutation from `split_seed`; limit_train keeps the first N of the rest."""
    if not 0 <= val_size < len(train.labels):
        raise ValueError(f"val_size: expected 0 <= val_size < {len(train.labels)} training images, got {val_size}")
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:None if limit_train is None else val_size + limit_train]
    return Split(train.images[train_idx], train.labels[train_idx]), Split(train.images[val_idx], train.labels[val_idx])


def md5_matches(path, md5):
    """Whether the MD5 of the file's bytes is `md5` (torchvision's check_integrity)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == md5


def check_md5(path, md5):
    if not md5_matches(path, md5):
        raise ChecksumError(f"{path}: MD5 is not the published {md5}; the file is corrupt or not the dataset's: "
                            "replace it with the published file (or pass --no-verify for files of your own)")


def cache_dir():
    """The user cache: $XDG_CACHE_HOME/simvae_fast, by default ~/.cache/simvae_fast."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "simvae_fast"
