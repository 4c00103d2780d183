"""Loading the C++ extensions (simvae_fast/_extension.py) and `simvae-fast info` (simvae_fast/info.py): a module
that does not load is reported once at import with what failed, the torch it was built against and the running
one, and the fixing command; a good build imports without any warning; info reports every version, module and
backend with its reason."""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

import simvae_fast
from simvae_fast import _extension, info

PACKAGE = os.path.dirname(os.path.abspath(simvae_fast.__file__))


def run_python(code, pythonpath=None):
    env = dict(os.environ, TRITON_INTERPRET="0")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-W", "default", "-c", code], env=env, capture_output=True, text=True,
                          cwd="/", timeout=300)


def test_a_good_build_imports_without_any_warning():
    """Fails if the import warns at all (e.g. a module reported missing, or a deprecated torch API)."""
    result = run_python("import warnings; warnings.simplefilter('error'); import simvae_fast; "
                        "print(simvae_fast.backends()['cpu'])")
    assert result.returncode == 0, result.stderr
    assert "usable=True" in result.stdout


def copy_of_the_package(tmp_path):
    copy = tmp_path / "simvae_fast"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    kernels = importlib.util.find_spec("simvae_fast.kernels")
    if kernels is not None and not (copy / "kernels").exists():
        shutil.copytree(os.path.dirname(kernels.origin), copy / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_module_that_does_not_load_is_reported_once_at_import(tmp_path):
    """A copy of the installed package whose _C is not a shared library. Fails if the import raises, stays
    silent, warns more than once, or the warning lacks the build's torch, the running torch or the fix."""
    copy = copy_of_the_package(tmp_path)
    (broken,) = glob.glob(str(copy / "_C.*so"))
    with open(broken, "wb") as f:
        f.write(b"not an ELF file")
    result = run_python("import simvae_fast; print(simvae_fast.backends()['cpu'])", pythonpath=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ExtensionWarning") == 1, result.stderr
    built = _extension.build_info()["torch"]
    assert "simvae_fast._C not importable (" in result.stderr
    assert f"built against torch {built}, running {torch.__version__}" in result.stderr
    assert "fix: pip install --force-reinstall --no-deps ." in result.stderr
    assert "usable=False" in result.stdout and "simvae_fast._C not importable" in result.stdout


def fake_import(failing, message):
    real = _extension.importlib.import_module

    def import_module(name):
        if name == f"simvae_fast.{failing}":
            raise ImportError(message)
        return real(name)

    return import_module


BUILT_ELSEWHERE = {"torch": "2.14.1+cu130", "torch_cuda": "13.0", "stable_abi_target": "2.10",
                   "modules": ["_C", "_C_cuda"]}


@pytest.fixture
def cuda_torch(monkeypatch):
    """The running torch claims CUDA, so that _C_cuda is looked for (these tests import nothing of it)."""
    monkeypatch.setattr(_extension.torch.version, "cuda", "13.0")


def test_a_version_locked_module_of_another_torch_is_not_even_imported(monkeypatch, cuda_torch):
    """Loading ATen-API code into another torch may crash the process: the build's torch is compared first."""
    monkeypatch.setattr(_extension.importlib, "import_module", fake_import("_C_cuda", "must not be imported"))
    loaded, (what, fix) = _extension._load("_C_cuda", BUILT_ELSEWHERE, dict(_extension.LOADED))
    assert loaded.module is None and loaded.reason == what
    assert what.startswith(f"simvae_fast._C_cuda was built against torch 2.14.1+cu130, running {torch.__version__}")
    assert fix == _extension.REBUILD


def test_a_version_locked_module_that_fails_to_import_names_both_torches(monkeypatch, cuda_torch):
    monkeypatch.setattr(_extension.importlib, "import_module", fake_import("_C_cuda", "libcudart.so.13: cannot open"))
    monkeypatch.setattr(_extension.importlib.util, "find_spec", lambda name: object())
    built_here = dict(BUILT_ELSEWHERE, torch=torch.__version__)
    loaded, (what, fix) = _extension._load("_C_cuda", built_here, dict(_extension.LOADED))
    assert what == (f"simvae_fast._C_cuda not importable (libcudart.so.13: cannot open); built against torch "
                    f"{torch.__version__}, running {torch.__version__}")
    assert fix == _extension.REBUILD


def test_the_stable_module_under_an_older_torch_asks_for_a_newer_one(monkeypatch):
    failing = fake_import("_C", "undefined symbol: torch_parallel_for")
    monkeypatch.setattr(_extension.importlib, "import_module", failing)
    info_newer_target = dict(BUILT_ELSEWHERE, stable_abi_target="99.0")
    _, (_, fix) = _extension._load("_C", info_newer_target, {})
    assert fix == "pip install 'torch>=99.0'"
    _, (_, fix) = _extension._load("_C", BUILT_ELSEWHERE, {})
    assert fix == _extension.REINSTALL


def test_modules_after_a_failed_schema_module_are_not_loaded(cuda_torch):
    failed = {"_C": _extension.Loaded(None, "simvae_fast._C not importable (...)")}
    loaded, problem = _extension._load("_C_cuda", BUILT_ELSEWHERE, failed)
    assert loaded == (None, "simvae_fast._C (the op schemas) did not load") and problem is None


def test_a_cuda_torch_without_the_cuda_module_says_how_to_build_it(monkeypatch, cuda_torch):
    monkeypatch.setattr(_extension.importlib.util, "find_spec", lambda name: None)
    built_here = dict(BUILT_ELSEWHERE, torch=torch.__version__, modules=["_C"])
    loaded, (what, fix) = _extension._load("_C_cuda", built_here, dict(_extension.LOADED))
    assert "simvae_fast._C_cuda was not built (the build's torch" in what
    assert fix.startswith("SIMVAE_FAST_CUDA=1 pip install --no-build-isolation")
    failed = dict(built_here, cuda_build_error="nvcc 12.4 cannot build for torch's CUDA 13.0")
    loaded, (what, fix) = _extension._load("_C_cuda", failed, dict(_extension.LOADED))
    assert what == "simvae_fast._C_cuda was not built (its build failed: nvcc 12.4 cannot build for torch's CUDA 13.0)"
    assert loaded.reason == what


def test_an_unbuilt_tree_says_so(monkeypatch):
    monkeypatch.setattr(_extension.importlib.util, "find_spec", lambda name: None)
    loaded, (what, fix) = _extension._load("_C", None, {})
    assert loaded.module is None and "simvae_fast._C is not built" in what and fix == "pip install ."


def test_info_prints_versions_build_modules_and_every_backend(capsys):
    assert info.run() == 0
    out = capsys.readouterr().out
    assert f"torch       {torch.__version__}" in out and f"Python      {sys.version.split()[0]}" in out
    assert "Triton      " in out
    build = _extension.build_info()
    assert f"built with  torch {build['torch']}" in out and build["compiler"] in out
    assert "_C        loaded; LibTorch stable ABI (loads into torch >= 2.10)" in out
    for name, (usable, reason) in simvae_fast.backends().items():
        assert f"  {name:9} {'usable' if usable else 'not usable'}: {reason}" in out
