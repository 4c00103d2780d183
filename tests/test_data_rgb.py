"""CIFAR-10 and CelebA from synthetic files in the published on-disk layouts: pixels and labels as written,
splits, CelebA's hair-colour filter and 64 px cache, MD5 refusal of a corrupted file, and the errors for missing
files (which say where the files go and where they are published)."""
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from simvae_fast.app import celeba, cifar10, data

RNG = np.random.default_rng(0)


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_root(isolated):
    images = RNG.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    labels = RNG.integers(0, 10, 60)
    test_images, test_labels = RNG.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), RNG.integers(0, 10, 20)
    cifar10.write_dataset(isolated / "root", images, labels, test_images, test_labels)
    return isolated / "root", (images, labels, test_images, test_labels)


def test_cifar_batches_load_as_written(cifar_root):
    root, (images, labels, test_images, test_labels) = cifar_root
    ds = data.load("cifar10", root, val_size=10, verify=False)
    assert ds.train.images.shape == (50, 3, 32, 32) and ds.val.images.shape == (10, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.shape == (50, 1)
    assert torch.equal(ds.test.images, torch.from_numpy(test_images))
    assert torch.equal(ds.test.labels[:, 0], torch.from_numpy(test_labels))
    merged = {(img.numpy().tobytes(), int(lab)) for split in (ds.train, ds.val) for img, lab in zip(*split)}
    assert merged == {(img.tobytes(), int(lab)) for img, lab in zip(images, labels)}
    assert ds.targets == (("class", cifar10.CLASSES),)
    limited = data.load("cifar10", root, val_size=10, limit_train=7, limit_test=3, verify=False)
    assert len(limited.train.labels) == 7 and len(limited.test.labels) == 3
    assert torch.equal(limited.val.images, ds.val.images)


def test_cifar_rows_are_red_green_blue_planes(isolated):
    """The published layout: each row holds the 1024 red values, then green, then blue, each row-major."""
    row = np.arange(3072) % 251
    folder = isolated / "root" / cifar10.FOLDER
    folder.mkdir(parents=True)
    cifar10.write_batch(folder / "test_batch", row.reshape(1, 3, 32, 32), [3])
    split = cifar10.read_batch(folder / "test_batch")
    assert split.images[0, 1, 2, 5] == row[1024 + 2 * 32 + 5] and split.labels.tolist() == [[3]]


def test_cifar_md5_is_checked(cifar_root, monkeypatch):
    root, _ = cifar_root
    folder = root / cifar10.FOLDER
    with pytest.raises(data.ChecksumError, match="batches.meta: MD5 is not the published"):
        data.load("cifar10", root, val_size=10)  # synthetic files are not the published ones
    monkeypatch.setattr(cifar10, "MD5", {name: md5_of(folder / name) for name in cifar10.MD5})
    assert len(data.load("cifar10", root, val_size=10).test.labels) == 20  # the right sums pass
    raw = bytearray((folder / "test_batch").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one corrupt byte
    (folder / "test_batch").write_bytes(bytes(raw))
    with pytest.raises(data.ChecksumError, match="test_batch: MD5"):
        data.load("cifar10", root, val_size=10)
    (folder / "test_batch").write_bytes(bytes(raw[:-40]))  # unreadable: a clear error, with or without --no-verify
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR-10 batch"):
        data.load("cifar10", root, val_size=10, verify=False)


@pytest.mark.parametrize("name, files, published", [
    ("cifar10", "data_batch_1", "cs.toronto.edu/~kriz/cifar.html"),
    ("celeba", "list_attr_celeba.txt", "mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
])
def test_missing_rgb_dataset_says_where_files_go(isolated, name, files, published):
    for call in (lambda: data.load(name, isolated / "nowhere"), lambda: data.fetch(name)):
        with pytest.raises(data.DatasetNotFoundError) as err:
            call()
        message = str(err.value)
        assert files in message and "cannot be fetched here" in message and published in message
        assert "--data-root" in message


def _attributes(hair_sets, male):
    rows = -np.ones((len(hair_sets), 40), dtype=int)
    for i, hair in enumerate(hair_sets):
        for name in hair:
            rows[i, celeba.ATTRIBUTE_NAMES.index(name)] = 1
        rows[i, celeba.ATTRIBUTE_NAMES.index("Male")] = 1 if male[i] else -1
    return rows


HAIR = [(), ("Black_Hair",), ("Blond_Hair",), ("Brown_Hair",), ("Gray_Hair",), ("Black_Hair", "Blond_Hair"),
        ("Blond_Hair",), (), ("Brown_Hair",), ("Gray_Hair", "Brown_Hair"), ("Black_Hair",), ()]
MALE = [1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0]
PARTITION = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def _faces(n):
    """Non-square 40 x 24 (h x w) images: a red band on the 8 rows above and below the centred 24 x 24 square
    (JPEG blocks: 8 x 8), which the centre crop must cut off, around a grey level that identifies the image."""
    images = np.zeros((n, 40, 24, 3), dtype=np.uint8)
    for i in range(n):
        images[i, 8:32] = 20 * i + 10
        images[i, :8, :, 0] = images[i, 32:, :, 0] = 255
    return images


@pytest.fixture(params=[False, True], ids=["folder", "zip"])
def celeba_root(isolated, request):
    celeba.write_dataset(isolated / "root", _faces(12), _attributes(HAIR, MALE), PARTITION, as_zip=request.param)
    return isolated / "root"


def test_celeba_splits_targets_and_crop(celeba_root):
    ds = data.load("celeba", celeba_root, val_size=2, verify=False)
    assert ds.targets == celeba.TARGETS
    assert ds.train.images.shape == (6, 3, 64, 64) and ds.val.images.shape == (2, 3, 64, 64)
    assert len(ds.test.labels) == 3
    # hair: black 0, blond 1, brown 2, grey 3, none 4; several hair attributes: -1 (dropped from the hair probe)
    assert ds.train.labels[:, 0].tolist() == [4, 0, 1, 2, 3, -1]
    assert ds.test.labels.tolist() == [[-1, 1], [0, 1], [4, 0]]
    assert ds.train.labels[:, 1].tolist() == MALE[:6]
    assert set(ds.val.labels[:, 0].tolist()) <= {1, 4, 2}  # drawn from the validation partition (images 7-9)
    # the centre crop cuts the red bands off; the image's grey level survives (JPEG: within a few levels)
    pixels = ds.train.images.float()
    assert (pixels[:, 0] - pixels[:, 1]).abs().max() < 12
    assert ((pixels.mean(dim=(1, 2, 3)) - torch.tensor([10.0, 30, 50, 70, 90, 110])).abs() < 4).all()


def test_celeba_is_decoded_once_into_the_cache(celeba_root, monkeypatch):
    first = data.load("celeba", celeba_root, val_size=2, verify=False)
    assert len(list((data.cache_dir() / "celeba-64").glob("*.npy"))) == 1

    def no_decoding(image):
        raise AssertionError("decoded again")

    monkeypatch.setattr(celeba, "preprocess", no_decoding)
    again = data.load("celeba", celeba_root, val_size=2, verify=False)
    assert torch.equal(first.train.images, again.train.images)


def test_celeba_preprocess_is_centre_square_then_resize():
    image = Image.fromarray(np.concatenate([np.full((10, 40, 3), 200, np.uint8), np.zeros((40, 40, 3), np.uint8),
                                            np.full((10, 40, 3), 200, np.uint8)]))  # 60 x 40: bands outside the square
    out = celeba.preprocess(image)
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8 and out.max() == 0


def test_celeba_md5_is_checked(celeba_root, monkeypatch):
    folder = celeba_root / celeba.FOLDER
    with pytest.raises(data.ChecksumError, match="list_attr_celeba.txt: MD5"):
        data.load("celeba", celeba_root, val_size=2)
    monkeypatch.setitem(celeba.MD5, celeba.ATTRIBUTES, md5_of(folder / celeba.ATTRIBUTES))
    monkeypatch.setitem(celeba.MD5, celeba.PARTITION, md5_of(folder / celeba.PARTITION))
    if (folder / celeba.ZIP).exists():
        monkeypatch.setitem(celeba.MD5, celeba.ZIP, md5_of(folder / celeba.ZIP))
    assert len(data.load("celeba", celeba_root, val_size=2).test.labels) == 3
    text = (folder / celeba.PARTITION).read_text()
    (folder / celeba.PARTITION).write_text(text.replace("000012.jpg 2", "000012.jpg 1"))
    with pytest.raises(data.ChecksumError, match="list_eval_partition.txt: MD5"):
        data.load("celeba", celeba_root, val_size=2)


def test_celeba_bad_val_size(celeba_root):
    with pytest.raises(ValueError, match="val_size: expected 0 <= val_size <= 3 images of CelebA's validation"):
        data.load("celeba", celeba_root, val_size=4, verify=False)
