#!/usr/bin/env bash
# Build torchcorr with its CUDA kernels for the visible GPU and check them: the CUDA tests, a memcheck
# run (when compute-sanitizer is installed) and the GPU benchmark, whose table is printed last.
#
#   scripts/gpu_check.sh                 # from anywhere; needs python3 with torch (CUDA), pytest, nvcc
#   PYTHON=/path/to/python scripts/gpu_check.sh
#
# Optional: MAX_JOBS (default: all cores), TORCH_CUDA_ARCH_LIST (default: the visible GPU's arch),
# GPU_CHECK_BUDGET_S (default 600: seconds for everything after the build; each step gets what is left, up
# to its cap), BENCH_ARGS (default --min-run-time 0.1), MODEL_ARGS (default --batch 32 --min-run-time 0.3),
# MODEL_PRECISIONS (default "float32 bfloat16": the model runs, in this order; "" skips them).
# Order: build, CUDA tests (spread over processes when pytest-xdist is installed), memcheck, the other native
# tests, then the benchmark, so that a short budget cuts the timing rather than the checks.
# Builds in place (torchcorr/_C*.so) and never installs anything. Logs go to bench/results/gpu_check/; the
# model benchmark needs torchvision.
# Exits non-zero when any step failed; every step runs regardless, so one report shows everything.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
LOGS="$ROOT/bench/results/gpu_check"
mkdir -p "$LOGS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
FAILED=()

# run_step NAME CAP_SECONDS COMMAND...: runs COMMAND under a timeout of min(CAP, time left), logs it, and
# records a failure instead of stopping the script.
run_step() {
  local name=$1 cap=$2 left
  shift 2
  left=$((DEADLINE - SECONDS))
  if ((left < 20)); then
    echo "== $name: skipped, the time budget is spent"
    FAILED+=("$name (no time left)")
    return
  fi
  ((cap > left)) && cap=$left
  echo "== $name (at most ${cap} s)"
  local start=$SECONDS status=0
  timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$LOGS/$name.log" || status=$?
  if ((status != 0)); then
    echo "== $name: FAILED (exit $status$( ((status == 124)) && echo ", timed out"))"
    FAILED+=("$name")
  else
    echo "== $name: ok ($((SECONDS - start)) s)"
  fi
}

echo "== GPUs"
if command -v nvidia-smi >/dev/null; then timeout 30 nvidia-smi -L || true; else echo "(nvidia-smi not found)"; fi
"$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no GPU (torch.cuda.is_available() is False)")
print(f"device 0: {torch.cuda.get_device_name(0)}, sm_{''.join(map(str, torch.cuda.get_device_capability(0)))}")
EOF

if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
  TORCH_CUDA_ARCH_LIST="$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')"
fi
export TORCH_CUDA_ARCH_LIST
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
"$PYTHON" -c 'import ninja' 2>/dev/null || command -v ninja >/dev/null ||
  echo "note: ninja is not installed, so the build compiles one file at a time (slower)"

echo "== build: TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
build_start=$SECONDS
if ! TORCHCORR_CUDA=1 timeout 420 "$PYTHON" setup.py -q build_ext --inplace >"$LOGS/build.log" 2>&1; then
  tail -40 "$LOGS/build.log"
  echo "gpu_check: the build failed (full log: $LOGS/build.log)"
  exit 1
fi
echo "== build: ok ($((SECONDS - build_start)) s)"
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET_S:-600}))
"$PYTHON" -c 'import torchcorr; print("build_info:", torchcorr.build_info())'

PARALLEL=()
"$PYTHON" -c 'import xdist' 2>/dev/null && PARALLEL=(-n "$(( $(nproc) < 8 ? $(nproc) : 8 ))")
run_step tests_cuda 240 "$PYTHON" -m pytest tests/test_cuda.py -q -p no:cacheprovider -rfEs --durations=8 \
  "${PARALLEL[@]}"

SANITIZER="$(command -v compute-sanitizer || true)"
if [[ -z "$SANITIZER" ]]; then
  CUDA_ROOT="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")}"
  [[ -x "$CUDA_ROOT/bin/compute-sanitizer" ]] && SANITIZER="$CUDA_ROOT/bin/compute-sanitizer"
fi
if [[ -n "$SANITIZER" ]]; then
  # Every op on a few small problems, with the caching allocator off so that reads past a tensor are caught.
  run_step memcheck 120 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 9 \
    "$PYTHON" scripts/memcheck_smoke.py
else
  echo "== memcheck: skipped (compute-sanitizer not found)"
fi

run_step tests_native 60 "$PYTHON" -m pytest tests/test_native.py -q -p no:cacheprovider -k "not 2_31"

rm -f bench/results/gpu.json
# shellcheck disable=SC2086
run_step bench 240 "$PYTHON" bench/bench_gpu.py ${BENCH_ARGS:---min-run-time 0.1}
# Whole torchvision models (float64 parity first), float32 and under bfloat16 autocast.
for precision in ${MODEL_PRECISIONS-float32 bfloat16}; do
  # shellcheck disable=SC2046,SC2086
  run_step "models_$precision" 150 "$PYTHON" bench/bench_models.py --device cuda --no-layers \
    ${MODEL_ARGS:---batch 32 --min-run-time 0.3} $([[ $precision == float32 ]] || echo --autocast $precision)
done

echo
if ((${#FAILED[@]})); then
  echo "gpu_check: FAILED steps: ${FAILED[*]} (logs in $LOGS)"
else
  echo "gpu_check: every step passed (logs in $LOGS)"
fi
echo
for precision in ${MODEL_PRECISIONS-float32 bfloat16}; do
  grep -A 12 "^Whole models" "$LOGS/models_$precision.log" 2>/dev/null || true
done
[[ -f bench/results/gpu.json ]] && "$PYTHON" bench/bench_gpu.py --show bench/results/gpu.json
((${#FAILED[@]} == 0))
