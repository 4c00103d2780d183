"""pytest-benchmark over the same cases as run.py, at their two smallest shapes:

    pytest benchmarks --benchmark-only
"""
import pytest
import torch

import harness
from cases import CASES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PARAMS = [
    pytest.param(case, provider, id=f"{case.op}-{case.shape}-{provider}")
    for op, cases in CASES.items()
    for case in cases[:2]
    for provider in case.providers
    if harness.runs_on(op, provider, DEVICE)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_forward_backward(benchmark, case, provider):
    closure = case.make(provider, DEVICE, torch.float32)

    def full():
        harness.run_backward(closure())
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    full()  # warm-up (and compilation for the "compile" provider)
    benchmark(full)
