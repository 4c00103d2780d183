"""GPU figures that the benchmark rows do not carry, measured in one run:
- the roofs: bf16 matrix-product rate (torch.matmul, N x N x N) and device copy bandwidth (bytes read + written);
- with --csv (the benchmark rows of the same machine): each row's TFLOP/s or GB/s as a fraction of those roofs;
- InfoNCE, bf16, D = 128: the largest N (doubling from 8192) whose forward+backward each provider fits in memory
  (torch.compile left out: it would recompile at every size);
- the latent op at n ~ 67M elements (fp32, noise made inside): GB/s of forward and backward against the copy roof
  (nominal bytes, cases_latent.py), eager and the kernels;
- kernel launches per direction of the latent op at an SSL size (G, J, D) = (4096, 2, 128), every provider.

    python gpu_roofline.py --csv results/gpu.csv --out results/roofline.md     (from benchmarks/, on a GPU)
    python gpu_roofline.py --device cpu --quick                                (a smoke run on the CPU)
"""
import argparse

import torch

import harness
from cases_info_nce import _make as info_nce_case
from cases_latent import _make as latent_case
from cases_latent import _work as latent_work


def median_ms(fn, device, rep=10):
    return sorted(harness.time_ms(fn, device, warmup=2, rep=rep))[rep // 2]


def matmul_tflops(device, n):
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / median_ms(lambda: a @ b, device) / 1e9


def copy_gbps(device, numel):
    x = torch.empty(numel, device=device, dtype=torch.float32)
    y = torch.empty_like(x)
    return 2 * x.numel() * 4 / median_ms(lambda: y.copy_(x), device) / 1e6


def fits(make, provider, device, dtype):
    try:
        harness.run_backward(make(provider, device, dtype)())
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
    while n <= limit and fits(info_nce_case(n, dim, 2, True), provider, device, torch.bfloat16):  # J = 2, normalized
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


def fractions_of_roofs(csv_path, matmul, copy):
    """Table lines: each benchmark row with a rate, as a fraction of the roof it is bound by."""
    lines = ["| op | shape | dtype | provider | mode | ms | TFLOP/s | GB/s | of roof |", "|---" * 9 + "|"]
    for r in harness.read_csv(csv_path):
        tflops, gbps = float(r.get("tflops") or 0), float(r.get("gbps") or 0)
        if not (tflops or gbps):
            continue
        share = f"{tflops * 1e3 / matmul:.1%} of matmul" if tflops else f"{gbps / copy:.1%} of copy"
        lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['provider']} | {r['mode']} | "
                     f"{float(r['median_ms']):.3f} | {tflops or '-':.3} | {gbps or '-':.4} | {share} |")
    return lines + [""]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--csv", default=None, help="benchmark rows of this machine: their fraction of the roofs")
    p.add_argument("--out", default=None, help="also write the tables to this markdown file")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the launch counts")
    args = p.parse_args()
    device = torch.device(args.device)
    n_nce, dim = (256, 32) if args.quick else (8192, 128)
    big_latent = (256, 2, 64) if args.quick else (262144, 2, 128)  # 67M elements at full size
    ssl_latent = (64, 2, 16) if args.quick else (4096, 2, 128)
    lines = []

    mm = matmul_tflops(device, 512 if args.quick else 8192)  # GFLOP/s
    bw = copy_gbps(device, 1 << (20 if args.quick else 28))  # GB/s
    lines += ["| roof | measured |", "| --- | --- |", f"| {'bf16' if device.type == 'cuda' else 'fp32'} matmul | "
              f"{mm / 1e3:.3g} TFLOP/s |", f"| device copy | {bw:.4g} GB/s |", ""]
    if args.csv:
        lines += fractions_of_roofs(args.csv, mm, bw)

    kernels = [p for p in harness.PROVIDERS if p != "compile" and harness.runs_on("info_nce", p, device)]
    lines += [f"InfoNCE bf16, D = {dim}, J = 2: largest N (from {n_nce}, doubling) whose forward+backward fits",
              "| provider | largest N |", "| --- | --- |"]
    for provider in kernels:
        lines.append(f"| {provider} | {largest_n(provider, device, n_nce, 4 * n_nce if args.quick else 131072, dim)} |")
    lines.append("")

    G, J, D = big_latent
    make, work = latent_case(big_latent, eps_given=False), latent_work(big_latent, False)
    lines += [f"Latent op, [G, J, D] = {big_latent} ({G * J * D / 1e6:.0f}M elements), fp32, noise made inside",
              "| provider | fwd ms | fwd GB/s | bwd ms | bwd GB/s | of copy roof (fwd, bwd) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for provider in [p for p in harness.PROVIDERS if p != "compile" and harness.runs_on("latent", p, device)]:
        case = harness.Case("latent", "", make, work=work)
        rows = {r["mode"]: r for r in harness.measure(case, provider, device, torch.float32, ("forward", "backward"),
                                                       2, 10)}
        fwd, bwd = rows["forward"], rows["backward"]
        lines.append(f"| {provider} | {fwd['median_ms']:.3f} | {fwd['gbps']:.4g} | {bwd['median_ms']:.3f} | "
                     f"{bwd['gbps']:.4g} | {fwd['gbps'] / bw:.0%}, {bwd['gbps'] / bw:.0%} |")
    lines.append("")

    lines += [f"Latent op, [G, J, D] = {ssl_latent}, fp32: kernel launches per direction",
              "| provider | forward | backward |", "| --- | --- | --- |"]
    for provider in [p for p in harness.PROVIDERS if harness.runs_on("latent", p, device)
                     and not (args.no_compile and p == "compile")]:
        f_launch, b_launch = launches(latent_case(ssl_latent, eps_given=False), provider, device, torch.float32)
        lines.append(f"| {provider} | {f_launch} | {b_launch} |")

    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{harness.machine(device)}, torch {torch.__version__}\n\n{text}\n")


if __name__ == "__main__":
    main()
