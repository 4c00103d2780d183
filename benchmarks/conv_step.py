"""Time one training step of the official convolutional model (simvae_fast.app.resnet): batch 128 views
(64 images x J = 2), augmentation (the official RGB recipe), forward, backward and Adam, as the trainer runs it.

    python benchmarks/conv_step.py                         # CPU: simvae, vae, simclr at 32 px; simvae at 64 px
    python benchmarks/conv_step.py --device cuda --bf16    # CUDA: channels_last (as the trainer), bf16 autocast

Prints a table (median and 20th/80th percentiles over --rep steps after --warmup) with the FLOPs of a step
(torch.utils.flop_counter: forward + backward of convolutions and matrix products) and the command, machine
and date, for benchmarks/results/images.md.
"""
import argparse
import datetime
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import git_version, machine
from simvae_fast.app import augment
from simvae_fast.app.train import Config, build_model, resolved


def step_fn(method, size, device, bf16):
    cfg = resolved(Config(method=method, dataset="cifar10" if size == 32 else "celeba"))
    torch.manual_seed(0)
    model = build_model(cfg, (3, size, size)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    images = torch.randint(0, 256, (cfg.batch_size // cfg.views, 3, size, size), dtype=torch.uint8, device=device)
    generator = torch.Generator(device).manual_seed(0)

    def step(seed):
        views = augment.make_views(images, cfg.views, cfg.augment, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model(views, seed=seed)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def measure(step, device, warmup, rep):
    for i in range(warmup):
        step(i)
    times = []
    for i in range(rep):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step(warmup + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    return statistics.median(times), q[0], q[3]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rep", type=int, default=5)
    p.add_argument("--cases", nargs="+", default=["simvae:32", "vae:32", "simclr:32", "simvae:64"])
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(f"conv_step.py {' '.join(sys.argv[1:])}: simvae_fast {git_version()}, torch {torch.__version__}, "
          f"{machine(device)}, {torch.get_num_threads()} threads, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"{'method':<8} {'px':>3} {'GFLOP/step':>10} {'median s':>9} {'p20 s':>7} {'p80 s':>7} {'GFLOP/s':>8}")
    for case in args.cases:
        method, size = case.split(":")
        step = step_fn(method, int(size), device, args.bf16)
        with FlopCounterMode(display=False) as counter:
            step(0)
        gflop = counter.get_total_flops() / 1e9
        median, p20, p80 = measure(step, device, args.warmup, args.rep)
        print(f"{method:<8} {size:>3} {gflop:>10.1f} {median:>9.3f} {p20:>7.3f} {p80:>7.3f} {gflop / median:>8.1f}")


if __name__ == "__main__":
    main()
