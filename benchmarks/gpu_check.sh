#!/usr/bin/env bash
# The one script a session lent a GPU runs there (the device tool, from the repo root; OUT is set by the tool):
#   bash benchmarks/gpu_check.sh              on the H200 machine: torch 2.11, triton 3.6, Python 3.12, no registry
#   bash benchmarks/gpu_check.sh --dry-run    on a CPU (CI: tests/test_gpu_check.py): every phase, tiny shapes
#
# Versions first, then each phase under its own `timeout`, most valuable first; a phase that fails or times out
# does not stop the next. All phases share GPU_CHECK_BUDGET_S (default 480 s = 8 min; one device run may last
# 10): a phase gets at most what is left, and is skipped when under 15 s is left. Benchmark rows are appended
# to $OUT/results.csv as each case finishes; one summary (the phases, the benchmark rows with TFLOP/s, GB/s
# and speedups, the issue-13 goal) comes last even when a phase failed. Dependencies the machine may lack
# (pytest, hypothesis, numpy, tqdm, matplotlib, ninja) are checked and what needs them is skipped with a message.
#
# Plan on the H200 (estimates: each torch.compile build ~20-60 s, each Triton compilation ~1-3 s on one core):
#   phase                 estimate  limit  what takes the time
#   versions                   5 s     -  nvidia-smi, imports (before the budgeted phases)
#   build                     90 s   150  6 C++/CUDA files on 16 jobs: the slowest file (~60-90 s)
#   bench-info_nce-bf16       70 s   110  1 torch.compile build (forward + backward graphs), ~5 Triton kernels
#   bench-info_nce-fp16       20 s    30  ~5 Triton kernels, eager, CUDA (no torch.compile)
#   bench-info_nce-fp32       20 s    30  the same in fp32
#   bench-latent              50 s    80  1 torch.compile build, 2 Triton kernels
#   roofline                  50 s    70  matmul/copy roofs, largest N (no recompiles: N is not a constexpr),
#                                         67M-element latent op, launch counts (compile hits the inductor cache)
#   gpu-tests                 80 s   110  pytest -m gpu of the two ops: ~250 Triton compilations over 8 shards
#   memcheck                  50 s    60  ~30 Triton compilations (odd shapes) + sanitized runs
#   racecheck                 20 s    50  Triton cache warm from memcheck
#   plot                       5 s    20  matplotlib, when installed
#   total                    460 s        (the 480 s budget cuts the tail first: the sanitizers)
# Outputs under $OUT (flat, 5 files: the device tool brings back at most 8): gpu_check.log (everything),
# results.csv, roofline.md, summary.md, results.png (when matplotlib is there).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
if [ "$DRY" = 1 ]; then OUT=${OUT:-$(mktemp -d /tmp/gpu_check_dry.XXXXXX)}; else
  OUT=${OUT:-$ROOT/benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}; fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
# A dry run tests the script, not the GPU's timing: on a shared 2-core CPU one import of torch can take 20 s,
# so its limits are scaled (x8) and its budget is an hour.
SCALE=$([ "$DRY" = 1 ] && echo 8 || echo 1)
BUDGET=${GPU_CHECK_BUDGET_S:-$([ "$DRY" = 1 ] && echo 3600 || echo 480)}
CSV=$OUT/results.csv
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
if [ "$DRY" = 1 ]; then
  DEVICE=cpu; NCE_SHAPE="N=64,"; LATENT_SHAPE="G=64,J=2,D=10,eps=inside"; SHARDS=2
  COMPILE=""  # torch.compile on 2 CPU cores costs minutes per build; tests/test_harness.py covers that provider
else
  DEVICE=cuda; NCE_SHAPE='N=8192,D=128,J=2$'  # J = 2, normalized (not the J = 4 and normalize=False cases)
  LATENT_SHAPE="G=4096,J=2,D=128,eps=inside"; SHARDS=8
  COMPILE="compile"
fi

NAMES=(); STATES=(); TIMES=(); ESTIMATES=()
record() { NAMES+=("$1"); STATES+=("$2"); TIMES+=("$3"); ESTIMATES+=("$4"); }

# phase NAME ESTIMATE_S LIMIT_S COMMAND...: run COMMAND under timeout (its whole process group is killed).
phase() {
  local name=$1 estimate=$2 limit=$(($3 * SCALE)); shift 3
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped (${left} s of the ${BUDGET} s budget left)"
    record "$name" "skipped: budget spent" 0 "$estimate"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (estimate ${estimate} s, limit ${limit} s, $((SECONDS)) s elapsed)"
  local t0=$SECONDS rc state
  timeout -k 10 "$limit" "$@"
  rc=$?
  case $rc in
    0) state=ok ;;
    124|137) state="TIMED OUT (${limit} s)" ;;
    *) state="FAILED (exit $rc)" ;;
  esac
  echo "-- $name: $state in $((SECONDS - t0)) s"
  record "$name" "$state" $((SECONDS - t0)) "$estimate"
}

skip() {  # skip NAME REASON
  echo "== $1: skipped ($2)"
  record "$1" "skipped: $2" 0 -
}

have() { "$PY" -c "import $1" >/dev/null 2>&1; }

versions() {
  echo "== versions ($(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname), $(nproc) cores, git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" - <<'PY'
import platform, sys
print(f"python {platform.python_version()} ({sys.executable})")
try:
    import torch
    cuda = torch.cuda.is_available()
    device = f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})" if cuda else "no CUDA device"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {device}")
except Exception as err:
    print(f"torch: {err}")
try:
    import triton
    print(f"triton {triton.__version__}")
except Exception as err:
    print(f"triton: {err}")
PY
  local nvcc sanitizer
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [ -x "$nvcc" ] && echo "nvcc: $("$nvcc" --version | grep -o 'release [0-9.]*')" || echo "nvcc: not found"
  SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  [ -x "$SANITIZER" ] && echo "compute-sanitizer: $("$SANITIZER" --version | tail -1)" || { echo "compute-sanitizer: not found"; SANITIZER=""; }
  MISSING=""
  for module in pytest hypothesis numpy tqdm matplotlib setuptools wheel ninja; do
    if have "$module"; then echo "$module $("$PY" -c "import $module; print(getattr($module, '__version__', '?'))")"
    else echo "$module: MISSING"; MISSING="$MISSING $module"; fi
  done
  [ -n "$MISSING" ] && echo "missing:$MISSING (what needs them is skipped below)"
  return 0
}

bench() {  # bench NAME ESTIMATE LIMIT run.py-arguments...
  local name=$1 estimate=$2 limit=$3; shift 3
  phase "$name" "$estimate" "$limit" env -C benchmarks "$PY" run.py --device "$DEVICE" --csv "$CSV" --warmup 3 --rep 10 "$@"
}

summary() {  # the benchmark rows (Python), then the phases (bash: printed even when Python cannot run)
  echo "== summary"
  "$PY" - "$CSV" "$DEVICE" >"$OUT/summary.md" <<'PY' || echo "(the benchmark table could not be made: $PY failed)" >"$OUT/summary.md"
import csv, os, sys
csv_path, device = sys.argv[1:3]
rows = list(csv.DictReader(open(csv_path))) if os.path.exists(csv_path) else []
ms_of = {(r["op"], r["shape"], r["dtype"], r["mode"], r["provider"]): float(r["median_ms"]) for r in rows}
print("| op | shape | dtype | provider | mode | median ms | TFLOP/s | GB/s | x eager | x compile |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    key, ms = (r["op"], r["shape"], r["dtype"], r["mode"]), float(r["median_ms"])
    ratio = lambda base: f"{base / ms:.2f}" if base else "-"
    rate = lambda value, spec: format(float(value), spec) if value else "-"
    cells = [r["op"], r["shape"], r["dtype"], r["provider"], r["mode"], f"{ms:.4f}", rate(r.get("tflops"), ".3g"),
             rate(r.get("gbps"), ".4g"), ratio(ms_of.get(key + ("reference",))), ratio(ms_of.get(key + ("compile",)))]
    print("| " + " | ".join(cells) + " |")
if not rows:
    print("| (no benchmark rows) | | | | | | | | | |")
goal = ("info_nce", "N=8192,D=128,J=2", "bfloat16", "full")
fused = [(ms_of[goal + (p,)], p) for p in ("triton", "cuda") if goal + (p,) in ms_of]
print()
if fused and device == "cuda":
    ms, provider = min(fused)
    eager, compiled = (ms_of.get(goal + (p,), float("nan")) for p in ("reference", "compile"))
    met = ms <= 0.150 and eager / ms >= 8 and compiled / ms >= 2
    print(f"issue-13 goal (InfoNCE bf16 N=8192 D=128 fwd+bwd <= 150 us, >= 8x eager, >= 2x torch.compile): "
          f"{provider} {ms * 1e3:.0f} us, {eager / ms:.1f}x eager, {compiled / ms:.1f}x compile: "
          f"{'MET' if met else 'NOT MET'}")
else:
    print("issue-13 goal: not measured (no GPU row of InfoNCE bf16 N=8192 D=128 forward+backward)")
PY
  {
    echo
    echo "| phase | state | seconds | estimate s |"
    echo "|---|---|---|---|"
    for i in "${!NAMES[@]}"; do echo "| ${NAMES[$i]} | ${STATES[$i]} | ${TIMES[$i]} | ${ESTIMATES[$i]} |"; done
  } >>"$OUT/summary.md"
  cat "$OUT/summary.md"
}

main() {
  versions
  if [ "$DRY" = 1 ]; then
    phase build 90 150 "$PY" -c "import simvae_fast; print('dry run, not rebuilt; the GPU run does: pip install --no-build-isolation --no-deps -e .'); print(simvae_fast.backends())"
  else
    phase build 90 150 bash -c '"$0" -m pip install -q --no-build-isolation --no-deps -e . && "$0" -c "import simvae_fast; print(simvae_fast.backends())"' "$PY"
  fi
  bench bench-info_nce-bf16 70 110 --op info_nce --dtype bfloat16 --shapes "$NCE_SHAPE" \
    --providers reference $COMPILE triton cuda cpu --modes forward backward full
  bench bench-info_nce-fp16 20 30 --op info_nce --dtype float16 --shapes "$NCE_SHAPE" \
    --providers reference triton cuda cpu --modes full
  bench bench-info_nce-fp32 20 30 --op info_nce --dtype float32 --shapes "$NCE_SHAPE" \
    --providers reference triton cuda cpu --modes full
  bench bench-latent 50 80 --op latent --dtype float32 --shapes "$LATENT_SHAPE" \
    --providers reference $COMPILE triton cuda cpu --modes forward backward full
  if [ "$DRY" = 1 ]; then
    phase roofline 50 70 env -C benchmarks "$PY" gpu_roofline.py --device cpu --quick --no-compile --csv "$CSV" --out "$OUT/roofline.md"
  else
    phase roofline 50 70 env -C benchmarks "$PY" gpu_roofline.py --csv "$CSV" --out "$OUT/roofline.md"
  fi
  if have pytest; then
    phase gpu-tests 80 110 "$PY" benchmarks/gpu_tests.py --shards "$SHARDS" --timeout $((100 * SCALE)) \
      tests/test_info_nce.py tests/test_latent.py
  else
    skip gpu-tests "pytest is not installed"
  fi
  if [ -n "$SANITIZER" ] && [ "$DRY" = 0 ]; then
    phase memcheck 50 60 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PY" benchmarks/gpu_sanitize.py
    phase racecheck 20 50 "$SANITIZER" --tool racecheck --error-exitcode 1 "$PY" benchmarks/gpu_sanitize.py
  elif [ "$DRY" = 1 ]; then
    phase sanitize-program 20 60 "$PY" benchmarks/gpu_sanitize.py --device cpu  # what the sanitizers would watch
  else
    skip memcheck "compute-sanitizer not found"; skip racecheck "compute-sanitizer not found"
  fi
  if have matplotlib && [ -s "$CSV" ]; then
    phase plot 5 20 env -C benchmarks "$PY" plot.py "$CSV" "$OUT/results.png"
  else
    skip plot "matplotlib missing or no rows"
  fi
  summary
  for state in "${STATES[@]}"; do
    case $state in ok|skipped*) ;; *) echo "gpu_check: some phases failed (see above); results in $OUT"; return 1 ;; esac
  done
  echo "gpu_check: all phases ok or skipped; results in $OUT"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
