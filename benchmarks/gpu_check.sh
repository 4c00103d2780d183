#!/usr/bin/env bash
# The one script a session lent a GPU runs there (device tool, from the repo root):
#   bash benchmarks/gpu_check.sh
# Builds the extension with CUDA, runs the GPU tests (pytest -m gpu), runs the benchmarks on CUDA, prints a
# short table last. Full results go under $OUT when it is set (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}

echo "== build"
"$PY" -m pip install -q --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
"$PY" -c "import simvae_fast, torch; print(torch.__version__, torch.cuda.get_device_name()); print(simvae_fast.backends())" | tee "$OUT/backends.txt"

echo "== GPU tests"
"$PY" -m pytest tests -m gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}

echo "== benchmarks (CUDA)"
CSV="$OUT/results.csv"
# float32 for every op; bf16 for InfoNCE (the tensor-core case). torch.compile dominates the time: keep it lean.
for args in "--dtype float32" "--dtype bfloat16 --op info_nce"; do
  (cd benchmarks && "$PY" run.py --device cuda $args --modes full --rep 10 --csv "$CSV") \
    >>"$OUT/bench.log" 2>&1 || echo "benchmarks failed for $args (see $OUT/bench.log)"
done
(cd benchmarks && "$PY" plot.py "$CSV" "$OUT/results.png") >>"$OUT/bench.log" 2>&1

echo "== roofline: matmul and copy roofs, InfoNCE TFLOP/s and largest N, latent GB/s and launches"
(cd benchmarks && "$PY" gpu_roofline.py --out "$OUT/roofline.md") 2>&1 | tee "$OUT/roofline.log" | tail -25

echo "== summary (forward+backward, speedup vs eager reference in the same run)"
"$PY" - "$CSV" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{'op':9} {'shape':24} {'dtype':9} {'provider':9} {'median ms':>10} {'peak MB':>9} {'speedup':>8}")
for r in rows:
    s = f"{float(r['speedup_vs_reference']):.2f}x" if r["speedup_vs_reference"] else "-"
    print(f"{r['op']:9} {r['shape']:24} {r['dtype']:9} {r['provider']:9} {float(r['median_ms']):10.3f} "
          f"{float(r['peak_mb']):9.1f} {s:>8}")
PY
echo "GPU tests exit code: $tests_rc"
exit "$tests_rc"
