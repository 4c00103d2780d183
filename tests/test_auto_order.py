"""backend="auto" per op and device: Triton first for InfoNCE on CUDA, the CUDA extension first for the latent op
(simvae_fast/backends.py says why), and the next one when the first is not usable."""
import importlib

import pytest
import torch

registry = importlib.import_module("simvae_fast.backends")  # the module, which simvae_fast.backends() shadows
ALL = ("reference", "cpu", "triton", "cuda")


@pytest.mark.parametrize("op, first, second", [("info_nce", "triton", "cuda"), ("latent", "cuda", "triton")])
def test_auto_order_on_cuda(monkeypatch, op, first, second):
    usable = {name: registry.Availability(True, "test") for name in ALL}
    monkeypatch.setattr(registry, "_availability", lambda name: usable[name])
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    cuda = torch.device("cuda")
    assert registry.resolve_backend("auto", cuda, ALL, op=op) == first
    usable[first] = registry.Availability(False, "test")
    assert registry.resolve_backend("auto", cuda, ALL, op=op) == second


@pytest.mark.parametrize("op", ["info_nce", "latent"])
def test_auto_on_cpu_is_the_extension(op):
    cpu = registry._availability("cpu")
    assert cpu.usable, f"the C++ extension must be built for the tests (make test builds it): {cpu.reason}"
    assert registry.resolve_backend("auto", torch.device("cpu"), ALL, op=op) == "cpu"
