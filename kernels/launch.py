"""What every Triton launcher of simvae_fast needs: the tensors' device made current, and torch's fp32 matmul switch.

device_guard(t): kernels launch on the current CUDA device, not the tensors'; the guard makes t's device current
(a no-op for CPU tensors, which only the interpreter runs).
fp32_dot_precision(): tl.dot input_precision for float32 operands, following torch's own switch: "tf32" when
torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32 (either one allows
TF32 for torch's own matmuls), "ieee" (exact fp32 products, FFMA) otherwise. The interpreter computes exact fp32
either way.
"""
import contextlib

import torch


def device_guard(t):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def fp32_dot_precision():
    allowed = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
    return "tf32" if allowed else "ieee"
