"""The backend registry: what is usable here, forcing a backend, and the warned fallback to the reference."""
import importlib
import warnings

import pytest
import torch

import simvae_fast
registry = importlib.import_module("simvae_fast.backends")  # the module, which simvae_fast.backends() shadows


def test_reports_every_backend_with_a_reason():
    found = simvae_fast.backends()
    assert set(found) == {"reference", "cpu", "triton", "cuda"}
    assert found["reference"].usable
    for availability in found.values():
        assert availability.reason


def test_cpu_backend_is_usable_once_the_extension_is_built():
    assert simvae_fast.backends()["cpu"] == (True, "C++ extension loaded")


def test_triton_backend_is_usable_wherever_triton_is_installed():
    """Under TRITON_INTERPRET=1 (tests/conftest.py) or on a GPU: the kernel tests never skip it silently."""
    assert simvae_fast.backends()["triton"].usable


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU report")
def test_cuda_backend_says_why_it_is_not_usable():
    usable, reason = simvae_fast.backends()["cuda"]
    assert not usable and reason in ("the running torch has no CUDA", "no CUDA device") or "was not built" in reason


def test_auto_picks_the_fastest_implemented_backend_for_the_device():
    cpu = torch.device("cpu")
    assert registry.resolve_backend("auto", cpu, ("reference", "cpu")) == "cpu"


def test_environment_variable_forces_a_backend(monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, "reference")
    assert registry.resolve_backend("auto", torch.device("cpu"), ("reference", "cpu")) == "reference"


def test_auto_fallback_to_the_reference_warns_once():
    registry._warn_fallback.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert registry.resolve_backend("auto", torch.device("cpu"), ("reference",)) == "reference"
    assert len([w for w in caught if "running the pure-PyTorch reference" in str(w.message)]) == 1


CUDA_USABLE = registry._availability("cuda").usable


@pytest.mark.parametrize("backend, implemented, error, match", [
    ("fastest", ("reference", "cpu"), ValueError, "backend: expected 'auto' or one of"),
    ("cpu", ("reference",), ValueError, "does not implement this op"),
    ("cuda", ("reference", "cuda"), *((ValueError, "'cuda' does not run on cpu tensors") if CUDA_USABLE
                                       else (RuntimeError, "'cuda' is not usable here"))),
])
def test_bad_backend_requests_are_clear_errors(backend, implemented, error, match):
    with pytest.raises(error, match=match):
        registry.resolve_backend(backend, torch.device("cpu"), implemented)


def test_backends_serve_only_their_devices(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert registry._serves("cpu", cpu) and not registry._serves("cpu", cuda)
    assert registry._serves("cuda", cuda) and not registry._serves("cuda", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert registry._serves("triton", cuda) and not registry._serves("triton", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert registry._serves("triton", cpu)
