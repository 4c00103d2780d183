#!/usr/bin/env bash
# #16 case (a): `pip install .` as a user types it. A fresh venv with the CPU torch (torch==2.13.0 here), then a
# plain `pip install .` of a clean copy of the checkout (pip's isolated build environment pulls the newest torch,
# 2.14.1 with CUDA, so the build's torch differs from the running one), then, outside the source tree: the import
# must not warn, `simvae-fast info` must run, the cpu backend must be usable, and one call of each op on it must
# match the pure-PyTorch reference in float64, forward and backward.
# Environment: PLAIN_VENV (default /tmp/simvae_fast_plain_venv, removed first), TORCH (default torch==2.13.0;
# TORCH= installs nothing first: case (b), an empty venv, where pip brings torch as a dependency).
# Cost here: ~5.5 GB of download and disk for the isolated build's torch (it builds _C_cuda too, which a CPU torch
# never imports), about 10 minutes (benchmarks/results/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PLAIN_VENV:-/tmp/simvae_fast_plain_venv}
TORCH=${TORCH-torch==2.13.0}
SRC=$(mktemp -d /tmp/simvae_fast_src.XXXXXX)
trap 'rm -rf "$SRC"' EXIT

rm -rf "$VENV"
python3 -m venv "$VENV"
if [ -n "$TORCH" ]; then "$VENV/bin/pip" install -q "$TORCH" numpy; fi
git ls-files -z | xargs -0 cp --parents -t "$SRC"  # the tracked files only: no build products of this tree
start=$(date +%s)
"$VENV/bin/pip" install -q "$SRC"
echo "plain pip install: $(( $(date +%s) - start )) s; venv: $(du -sh "$VENV" | cut -f1)"

cd /
"$VENV/bin/simvae-fast" info
"$VENV/bin/python" -W error - <<'PY'
import torch

import simvae_fast
from simvae_fast import reference

failed = []


def check(name, got, want):
    for g, w in zip(got, want):
        err = (g.double() - w.double()).norm() / w.double().norm().clamp_min(1e-300)
        if not err < 1e-10:
            failed.append(f"{name}: relative error {err:.3g}")


usable, reason = simvae_fast.backends()["cpu"]
if not usable:
    failed.append(f"cpu backend not usable: {reason}")
else:
    g = torch.Generator().manual_seed(0)
    mu, logvar, eps = (torch.randn(17, 3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    z = torch.randn(9, 2, 7, generator=g, dtype=torch.float64)
    for backend in ("cpu", "reference"):
        leaves = [t.clone().requires_grad_() for t in (mu, logvar, z)]
        out = simvae_fast.simvae_latent(leaves[0], leaves[1], eps=eps, backend=backend)
        loss = simvae_fast.info_nce(leaves[2], backend=backend)
        (out.z.sum() + out.log_prior.sum() + out.entropy.sum() + loss).backward()
        result = [out.z, out.log_prior, out.entropy, loss] + [t.grad for t in leaves]
        if backend == "cpu":
            kernels = result
    check("latent op and info_nce, forward and backward", kernels, result)
print("\n".join(failed) or "plain install: the cpu backend loads and matches the reference")
raise SystemExit(1 if failed else 0)
PY
