"""GPU figures that the CSV rows do not carry, measured in one run:
- the roofs: bf16 matrix-product rate and device copy bandwidth;
- InfoNCE at N = 8192, D = 128 in bf16: TFLOP/s of forward+backward (6 N^2 D nominal FLOPs) per provider,
  and its fraction of the measured matrix rate; the largest N (doubling from 8192) each provider fits;
- the latent op at n = G*J*D elements: GB/s against the copy bandwidth (forward reads mu, logvar and writes z;
  backward reads dz, mu, logvar and writes dmu, dlogvar), and kernel launches per direction.

    python gpu_roofline.py --out results/roofline.md          (from benchmarks/, on a GPU)
    python gpu_roofline.py --device cpu --quick                (a smoke run of the same code on the CPU)
"""
import argparse

import torch

import harness
from cases_info_nce import _make as info_nce_case
from cases_latent import _make as latent_case


def median_ms(fn, device, rep=10):
    return sorted(harness.time_ms(fn, device, warmup=2, rep=rep))[rep // 2]


def matmul_tflops(device, n):
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / median_ms(lambda: a @ b, device) / 1e9


def copy_gbps(device, numel):
    x = torch.empty(numel, device=device, dtype=torch.float32)
    y = torch.empty_like(x)
    return 2 * x.numel() * 4 / median_ms(lambda: y.copy_(x), device) / 1e6


def full_step(make, provider, device, dtype):
    closure = make(provider, device, dtype)
    return lambda: harness.run_backward(closure())


def fits(make, provider, device, dtype):
    try:
        full_step(make, provider, device, dtype)()
        harness._sync(device)
        return True
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if "out of memory" not in str(err).lower() and not isinstance(err, torch.OutOfMemoryError):
            raise
        return False
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_n(provider, device, start, limit, dim=128):
    """The largest N = start * 2^k <= limit whose forward+backward fits, or 0."""
    best, n = 0, start
    while n <= limit and fits(info_nce_case(n, dim), provider, device, torch.bfloat16):
        best, n = n, 2 * n
    return best


def launches(make, provider, device, dtype):
    """Kernels launched by the forward and by the backward (CUDA kernels; ATen ops on the CPU)."""
    closure = make(provider, device, dtype)
    harness.run_backward(closure())  # warm-up (compilation)
    activity = torch.profiler.ProfilerActivity.CUDA if device.type == "cuda" else torch.profiler.ProfilerActivity.CPU
    counts = []
    for phase in ("forward", "backward"):
        result = closure() if phase == "backward" else None
        with torch.profiler.profile(activities=[activity]) as prof:
            if phase == "forward":
                closure()
            else:
                harness.run_backward(result)
        if device.type == "cuda":
            counts.append(sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA))
        else:
            counts.append(sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None))
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = p.parse_args()
    device = torch.device(args.device)
    n_nce, dim = (512, 32) if args.quick else (8192, 128)
    latent_shape = (256, 2, 64) if args.quick else (262144, 2, 128)  # 67M elements at full size
    lines = []

    mm = matmul_tflops(device, 512 if args.quick else 8192)
    bw = copy_gbps(device, 1 << (20 if args.quick else 28))
    lines += ["| roof | measured |", "| --- | --- |", f"| bf16 matmul | {mm:.3g} TFLOP/s |",
              f"| device copy | {bw:.3g} GB/s |", ""]

    providers = [p for p in harness.PROVIDERS if harness.runs_on("info_nce", p, device)]
    lines += [f"InfoNCE N = {n_nce}, D = {dim}, J = 2, bf16, forward+backward",
              "| provider | ms | TFLOP/s | of matmul roof | largest N that fits |", "| --- | --- | --- | --- | --- |"]
    for provider in providers:
        ms = median_ms(full_step(info_nce_case(n_nce, dim), provider, device, torch.bfloat16), device)
        tflops = 6 * n_nce**2 * dim / ms / 1e9
        # torch.compile specialises on N: searching would recompile at every size
        biggest = "-" if provider == "compile" else largest_n(provider, device, n_nce, 4 * n_nce if args.quick
                                                              else 131072, dim)
        lines.append(f"| {provider} | {ms:.3f} | {tflops:.3g} | {tflops / mm:.1%} | {biggest} |")
    lines.append("")

    G, J, D = latent_shape
    n = G * J * D
    lines += [f"Latent op, [G, J, D] = {latent_shape} ({n / 1e6:.0f}M elements), fp32, noise made inside",
              "| provider | fwd ms | fwd GB/s | bwd ms | bwd GB/s | of copy bandwidth (fwd, bwd) | launches fwd/bwd |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    make = latent_case(latent_shape, eps_given=False)
    for provider in [p for p in harness.PROVIDERS if harness.runs_on("latent", p, device)]:
        rows = {r["mode"]: r for r in harness.measure(harness.Case("latent", "", make), provider, device,
                                                       torch.float32, ("forward", "backward"), 2, 10)}
        fwd, bwd = rows["forward"]["median_ms"], rows["backward"]["median_ms"]
        fwd_gbps, bwd_gbps = 3 * n * 4 / fwd / 1e6, 5 * n * 4 / bwd / 1e6
        f_launch, b_launch = launches(make, provider, device, torch.float32)
        lines.append(f"| {provider} | {fwd:.3f} | {fwd_gbps:.3g} | {bwd:.3f} | {bwd_gbps:.3g} | "
                     f"{fwd_gbps / bw:.0%}, {bwd_gbps / bw:.0%} | {f_launch}/{b_launch} |")

    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{harness.machine(device)}, torch {torch.__version__}\n\n{text}\n")


if __name__ == "__main__":
    main()
