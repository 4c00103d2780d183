"""A few odd shapes through every fused backend of InfoNCE and the latent op, forward and backward: the
program compute-sanitizer (memcheck, racecheck) watches in benchmarks/gpu_check.sh.

Each result is also compared with the float64 reference (norm-wise relative error), so a run that computed
garbage without touching memory out of bounds still fails. Sizes are odd on purpose (a partial tile in every
direction, D = 1, a lone group) and small (the sanitizer slows kernels by 10-100x).

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize.py
    python benchmarks/gpu_sanitize.py --device cpu          (the same code on the CPU backends)
"""
import argparse
import sys

import torch

import simvae_fast
from simvae_fast import reference
from simvae_fast.backends import backends

INFO_NCE_SHAPES = [(3, 2, 17), (9, 3, 129), (65, 2, 10)]  # (G, J, D)
LATENT_SHAPES = [(1, 2, 1), (5, 3, 129), (33, 2, 257)]
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}  # bf16: 2^-8 rounding of each output, seen <= 3e-3


def relative_error(actual, expected):
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return (torch.linalg.vector_norm(a - e) / torch.linalg.vector_norm(e).clamp_min(1e-30)).item()


def rounded(t, dtype):
    """t as the kernel sees it (rounded to dtype), back in float64: the reference then runs on the same inputs, so
    a half-precision error is the kernel's own and not the inputs' rounding, which a tiny group with nearly
    cancelling terms amplifies (bf16 latent at (1, 2, 1): dmu off by 7% against unrounded inputs)."""
    return t.to(dtype).double()


def info_nce_errors(backend, device, dtype, shape):
    z = rounded(torch.randn(shape, dtype=torch.float64), dtype)
    ours = z.to(device, dtype).requires_grad_()
    exact = z.clone().requires_grad_()
    loss = simvae_fast.info_nce(ours, temperature=0.3, backend=backend)
    loss.backward()
    expected = reference.info_nce(exact, 0.3)
    expected.backward()
    return {"loss": relative_error(loss, expected), "dz": relative_error(ours.grad, exact.grad)}


def latent_errors(backend, device, dtype, shape):
    mu, logvar, eps = (rounded(scale * torch.randn(shape, dtype=torch.float64), dtype) for scale in (1.0, 0.3, 1.0))
    ours = [t.to(device, dtype).requires_grad_() for t in (mu, logvar)]
    exact = [t.clone().requires_grad_() for t in (mu, logvar)]
    out = simvae_fast.simvae_latent(*ours, eps=eps.to(device, dtype), backend=backend)
    z = reference.reparameterize(exact[0], exact[1], eps)
    expected = (z, reference.grouped_prior_log_prob(z, sigma2=0.15, prior="gaussian"),
                reference.gaussian_entropy(exact[1]))
    weights = [torch.randn_like(e) for e in expected]
    sum((o.double().cpu() * w).sum() for o, w in zip(out, weights)).backward()
    sum((e * w).sum() for e, w in zip(expected, weights)).backward()
    return {"z": relative_error(out[0], expected[0]), "log_prior": relative_error(out[1], expected[1]),
            "dmu": relative_error(ours[0].grad, exact[0].grad), "dlogvar": relative_error(ours[1].grad, exact[1].grad)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    fused = ["cuda", "triton"] if device.type == "cuda" else ["cpu"]
    usable = [b for b in fused if backends()[b].usable]
    print(f"backends on {device.type}: {', '.join(usable) or 'none'} "
          f"(not usable: {', '.join(f'{b}: {backends()[b].reason}' for b in fused if b not in usable) or '-'})")
    failed = not usable
    for backend in usable:
        for dtype, tol in TOLERANCE.items():
            for op, shapes, errors in (("info_nce", INFO_NCE_SHAPES, info_nce_errors),
                                       ("latent", LATENT_SHAPES, latent_errors)):
                for shape in shapes:
                    result = errors(backend, device, dtype, shape)
                    bad = {k: v for k, v in result.items() if not v <= tol}
                    failed |= bool(bad)
                    print(f"{'FAIL' if bad else 'ok  '} {op} {backend} {str(dtype)[6:]} {shape}: "
                          + ", ".join(f"{k} {v:.2g}" for k, v in result.items()))
    if device.type == "cuda":
        torch.cuda.synchronize()
    print("sanitize run: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
