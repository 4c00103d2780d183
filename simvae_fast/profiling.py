"""Peak memory of a call: what benchmarks and the memory tests measure.

CPU: torch's profiler records every tensor allocation and free ("[memory]" events); the peak of their running
sum is the call's peak extra memory. CUDA: the caching allocator's peak statistics.
"""
import torch
from torch.profiler import ProfilerActivity, profile


def peak_memory_bytes(fn, device):
    """Runs fn() once; returns (its result, the peak bytes it had allocated at once above the start)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - start
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return result, peak
