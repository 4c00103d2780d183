"""The arithmetic dtype of the fused ops: float32 for float32/float16/bfloat16 inputs, float64 for float64."""
import torch


def accumulation_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32
