"""Test configuration: Triton runs in its CPU interpreter unless a GPU is present.

TRITON_INTERPRET must be set before triton decorates any kernel, so before simvae_fast is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def poison_empty_tensors():
    """torch.empty (also at::empty in the extension) returns NaN-filled memory during the test, so an output
    element a kernel never wrote shows up as NaN."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(previous[0])
    torch.utils.deterministic.fill_uninitialized_memory = previous[1]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real dataset anywhere: an empty cache, no $SIMVAE_FAST_DATA, a Debian root that is empty."""
    from simvae_fast import data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "DEBIAN_ROOT", tmp_path / "debian")
    return tmp_path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Synthetic FashionMNIST- and MNIST-named datasets (gzipped IDX): 256 training and 64 test images each, a
    bright band whose height gives the class, on noise."""
    import numpy as np

    from simvae_fast import data

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data")

    def split(n):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 6] += 150
        return images, labels

    for name in ("fashion-mnist", "mnist"):
        data.write_dataset(root / name, *split(256), *split(64), compress=True)
    return root
