"""Both fused ops registered one way (simvae_fast/ops/registry.py): one error for a backend that cannot run, the
same for both ops, and a backend narrowed per op when the build has no kernel of that op for its dispatch key."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

import simvae_fast
from simvae_fast.ops import registry

backends_module = importlib.import_module("simvae_fast.backends")  # the module, which simvae_fast.backends() shadows

CHILD = """
import simvae_fast, torch
calls = {
    "latent": lambda: simvae_fast.simvae_latent(torch.zeros(2, 2, 3), torch.zeros(2, 2, 3), seed=0, backend="triton"),
    "info_nce": lambda: simvae_fast.info_nce(torch.randn(2, 2, 3), backend="triton"),
}
for op, call in calls.items():
    try:
        call()
        print(op, "ran")
    except Exception as error:
        print(op, type(error).__name__, error)
print("reason", simvae_fast.backends()["triton"].reason)
"""


def test_an_unusable_backend_is_the_same_error_for_both_ops():
    """Triton not usable (no GPU, no interpreter: a fresh process with TRITON_INTERPRET=0): both ops raise the
    same RuntimeError with the backend's reason. Fails on the tree before ops/registry.py, where InfoNCE
    registered only the backends usable at import and said "backend: 'triton' does not implement this op"
    (ValueError) while the latent op said "is not usable here": checked."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, cwd="/",
                            timeout=300)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: triton is usable there, so no backend is unusable to test")
    expected = f"RuntimeError backend: 'triton' is not usable here: {lines['reason']}"
    assert lines["latent"] == lines["info_nce"] == expected


def test_a_build_without_an_ops_kernel_narrows_that_op_only(monkeypatch):
    """The cpu backend loses InfoNCE when the build registered no CPU kernel of it; the latent op keeps it."""
    _require_extension()
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    monkeypatch.setattr(torch._C, "_dispatch_has_kernel_for_dispatch_key",
                        lambda name, key: name != "simvae_fast::info_nce_forward" and has_kernel(name, key))
    reason = registry._missing_kernel("info_nce", "cpu")
    assert reason == "this build of the extension has no CPU kernel of simvae_fast::info_nce_forward"
    assert registry._missing_kernel("latent", "cpu") is None
    monkeypatch.setattr(backends_module, "_OP_AVAILABILITY", {})
    backends_module.record_missing_kernel("info_nce", "cpu", reason)
    cpu = torch.device("cpu")
    with pytest.raises(RuntimeError, match=f"backend: 'cpu' is not usable here: {reason}"):
        backends_module.resolve_backend("cpu", cpu, op="info_nce")
    assert backends_module.resolve_backend("cpu", cpu, op="latent") == "cpu"
    backends_module._warn_fallback.cache_clear()
    with pytest.warns(RuntimeWarning, match=rf"\(cpu: {reason}\); running the pure-PyTorch reference"):
        assert backends_module.resolve_backend("auto", cpu, op="info_nce") == "reference"
    backends_module._warn_fallback.cache_clear()


def test_every_backend_of_both_ops_is_registered_with_the_same_schema_form():
    """The Triton pair and the extension pair of each op take the same arguments (one autograd formula)."""
    _require_extension()
    for op in ("latent", "info_nce"):
        triton = getattr(torch.ops.simvae_fast, f"{op}_triton_forward").default._schema
        assert [a.name for a in triton.arguments]
        extension = getattr(torch.ops.simvae_fast, f"{op}_forward").default._schema
        assert [str(a.type) for a in triton.arguments] == [str(a.type) for a in extension.arguments]
        assert [str(r.type) for r in triton.returns] == [str(r.type) for r in extension.returns]


def test_an_extension_without_an_ops_schemas_narrows_that_op(monkeypatch):
    """A simvae_fast._C built from older sources (here: an op name it never defined) leaves the package
    importable: register() records why the extension backends cannot run that op instead of raising
    "operator ... does not exist" at import. Fails with the schema check removed from register(): checked."""
    _require_extension()
    assert registry._has_schemas("latent") and registry._has_schemas("info_nce")
    assert not registry._has_schemas("no_such_op")
    monkeypatch.setattr(backends_module, "_OP_AVAILABILITY", {})
    fake = lambda z: z.clone()  # noqa: E731
    forward, _, _ = registry.register("no_such_op", fake_forward=fake, fake_backward=fake,
                                      setup_context=lambda ctx, inputs, output: None,
                                      make_backward=lambda backward: (lambda ctx, grad: grad),
                                      triton_forward=_triton_identity, triton_backward=_triton_identity)
    assert list(forward) == ["triton"]
    with pytest.raises(RuntimeError, match="has no schema of simvae_fast::no_such_op_forward .*rebuild it"):
        backends_module.resolve_backend("cpu", torch.device("cpu"), op="no_such_op")


def _triton_identity(z: torch.Tensor) -> torch.Tensor:
    return z.clone()


def _require_extension():
    """The suite runs against a built extension (make test builds it): a missing one fails, never skips."""
    cpu = simvae_fast.backends()["cpu"]
    assert cpu.usable, f"the C++ extension must be built for the tests: {cpu.reason}"
