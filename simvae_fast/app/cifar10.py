"""CIFAR-10 in torchvision's layout: <root>/cifar-10-batches-py/ holding the pickled data_batch_1..5, test_batch
and batches.meta of the published cifar-10-python.tar.gz, extracted.

Each batch is a pickle (Python 2, read with encoding latin1) of a dict: "data" uint8 [10000, 3072] (the 1024 red,
then green, then blue values of each 32x32 image, row-major), "labels" a list of 10000 ints in 0..9; batches.meta
holds "label_names". Every file's MD5 is checked against torchvision's published values before it is unpickled
(verify=False, the CLI's --no-verify, skips that: unpickle only files you trust). No package registry holds
CIFAR-10: users bring it.
"""
import pickle
from pathlib import Path

import numpy as np
import torch

from simvae_fast.app import dataset

FOLDER = "cifar-10-batches-py"
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PUBLISHED = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz, MD5 c58f30108f718f92721af3b95e74349a)"
NOT_FETCHABLE = (f"cifar10 cannot be fetched here: no package registry these machines reach holds it. It is published "
                 f"at {PUBLISHED}; extract it so that <root>/{FOLDER}/ holds {', '.join(MD5)}, and pass "
                 "--data-root <root>")


def candidate_folders(data_root=None):
    return [folder for root in dataset.roots(data_root) for folder in (root / FOLDER, root / "cifar10" / FOLDER)]


def find_files(data_root=None):
    """{file name: path} in the first candidate folder holding all seven files."""
    tried = candidate_folders(data_root)
    for folder in tried:
        if all((folder / name).is_file() for name in MD5):
            return {name: folder / name for name in MD5}
    raise dataset.DatasetNotFoundError(f"dataset 'cifar10' not found: looked for {', '.join(MD5)} in "
                                    f"{', '.join(map(str, tried))}. {NOT_FETCHABLE}")


def read_batch(path, md5=None):
    """A batch file's images [N, 3, 32, 32] uint8 and labels [N] int64 (md5: checked first)."""
    if md5 is not None:
        dataset.check_md5(path, md5)
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # a damaged pickle raises any of a dozen kinds
        raise ValueError(f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path}: not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    images = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise ValueError(f"{path}: expected 'data' [N, 3072] and N 'labels', got {images.shape} and {len(labels)}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise ValueError(f"{path}: labels outside 0..9")
    return dataset.Split(torch.from_numpy(images.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)[:, None])


def load(data_root=None, *, val_size=5000, split_seed=0, limit_train=None, limit_test=None, verify=True):
    """CIFAR-10 as dataset.Dataset: 50,000 training images less `val_size` held out, 10,000 test images."""
    paths = find_files(data_root)

    def md5(name):
        return MD5[name] if verify else None

    if verify:
        dataset.check_md5(paths["batches.meta"], MD5["batches.meta"])
    batches = [read_batch(paths[name], md5(name)) for name in TRAIN_BATCHES]
    train = dataset.Split(torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches]))
    train, val = dataset.hold_out(train, val_size, split_seed, limit_train)
    test = read_batch(paths["test_batch"], md5("test_batch"))
    test = dataset.Split(test.images[:limit_test], test.labels[:limit_test])
    return dataset.Dataset("cifar10", Path(paths["test_batch"]).parent, (("class", CLASSES),), train, val, test)


def write_batch(path, images, labels):
    """Write uint8 images [N, 3, 32, 32] and labels [N] as a batch file in the published format (for tests and
    data of your own, loaded with verify=False)."""
    images = np.asarray(images, dtype=np.uint8)
    entry = {"batch_label": Path(path).name, "labels": [int(v) for v in labels],
             "data": images.reshape(len(images), -1), "filenames": [f"{i}.png" for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_dataset(root, train_images, train_labels, test_images, test_labels):
    """Lay out a CIFAR-10-shaped dataset under <root>/cifar-10-batches-py/ (training images split over the five
    batches); returns that folder."""
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, idx in zip(TRAIN_BATCHES, np.array_split(np.arange(len(train_labels)), len(TRAIN_BATCHES))):
        write_batch(folder / name, np.asarray(train_images)[idx], np.asarray(train_labels)[idx])
    write_batch(folder / "test_batch", test_images, test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": 10000, "num_vis": 3072}, f, protocol=2)
    return folder
