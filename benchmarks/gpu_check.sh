#!/usr/bin/env bash
# The GPU check (DESIGN.md "Scale", docs/kernels.md "Status of the CUDA kernels"). On a machine with an NVIDIA GPU
# and a CUDA build of torch, from the repository root:
#
#   bash benchmarks/gpu_check_prepare.sh     # first, on a machine with PyPI: wheels for what the GPU machine lacks
#   bash benchmarks/gpu_check.sh             # on the GPU machine, with .whl/ carried along; about 5-8 minutes
#
# Steps, each timed and capped, each run whatever the previous ones gave (except that without a GPU it stops):
#   deps           install the carried wheels (.whl/) of packages that do not import (hydra-core, omegaconf, ...)
#                  into $SITE, which goes on PYTHONPATH; no network, no build isolation, nothing else touched
#   gpu            nvidia-smi, torch's CUDA, nvcc; exits 2 here when no CUDA GPU is visible to torch
#   build          posttrain._C with its CUDA kernels, in the tree, against the torch found (TORCH_CUDA_ARCH_LIST=9.0
#                  by default: an H100/H200; set it for another card)
#   tests          pytest tests/ops: CPU kernels, references and the CUDA tests (tests/ops/test_cuda.py)
#   bench_kernels  benchmarks/bench_kernels.py --device cuda (reference vs kernel, GB/s, peak memory)
#   bench_lm_head  benchmarks/bench_lm_head.py --device cuda, N=4096 H=1024 V=128256 in bfloat16
#   train_grpo     two optimizer steps of GRPO in bf16 on the GPU (POSTTRAIN_OPS=ext when the tests step passed)
#   train_spin     the same for SPIN
#
# Everything goes to one folder: $OUT when set, else benchmarks/out/gpu_check/ (git-ignored): summary.txt and
# summary.json, the benchmarks' JSON, and logs.tar.gz with every step's log (under $OUT the logs/ folder is packed
# and removed, so that few files come back). The exit status is 0 when every step passed, 2 without a GPU, else 1.
#
# Environment: GPU_CHECK_STEPS="deps gpu build ..." runs a subset; GPU_CHECK_BUDGET_S (480) caps the whole run;
# GPU_CHECK_REHEARSE=1 runs every step on the CPU (no GPU needed: to try the script itself; on 2 cores give it
# GPU_CHECK_BUDGET_S=1800 GPU_CHECK_CAP_SCALE=4); PYTHON (python3); SITE (/tmp/posttrain_site).
set -u -o pipefail
cd "$(dirname "$0")/.."
export ROOT=$PWD
export PY=${PYTHON:-python3}
export RESULTS=${OUT:-$ROOT/benchmarks/out/gpu_check}
export LOGS=$RESULTS/logs
export SITE=${SITE:-/tmp/posttrain_site}
export REHEARSE=${GPU_CHECK_REHEARSE:-0}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
STEPS=${GPU_CHECK_STEPS:-"deps gpu build tests bench_kernels bench_lm_head train_grpo train_spin"}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
CAP_SCALE=${GPU_CHECK_CAP_SCALE:-1}
DEVICE=cuda
if [ "$REHEARSE" = 1 ]; then DEVICE=cpu; fi
export DEVICE

# ------------------------------------------------------------------------------------------------------------------
# TRAINING RUNS: the Hydra overrides of the two bf16 runs. They follow conf/ as of this script's commit (the tests'
# two-step settings, tests/test_configs.py); adjust them here when the configuration changes.
TRAINER=trainer=gpu
if [ "$REHEARSE" = 1 ]; then TRAINER=trainer=cpu; fi
MODEL_DTYPE=(model.dtype=bfloat16)
grep -q '^dtype:' conf/model/tiny.yaml || MODEL_DTYPE=()  # the tiny model has no model.dtype key yet: autocast only
TRAIN_COMMON=(debug=tiny stages.warmup=null "$TRAINER" trainer.precision=bf16-mixed "${MODEL_DTYPE[@]}"
              logger=csv "~callbacks.progress_bar" stages.main.save_dir=null)
TRAIN_GRPO=(experiment=grpo trainer.max_epochs=1 reward._target_=tests.helpers.CoinFlipVerifier
            method.truncated_is_wrong=false)
TRAIN_SPIN=(experiment=spin stages.control=null method.num_iterations=1 method.epochs_per_iteration=1)
# ------------------------------------------------------------------------------------------------------------------

rm -rf "$LOGS"
mkdir -p "$LOGS"
START=$(date +%s)
names=()
verdicts=()
seconds=()

# A step: its own log, a time cap (its own, or what is left of the budget), and a verdict; failures do not stop
# the run. Composite steps are functions run through `bash -c` so that `timeout` can end them.
run_step() {  # name cap command...
  local name=$1 cap=$2 left rc t0 ms verdict
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  cap=$((cap * CAP_SCALE))
  left=$((BUDGET_S - ($(date +%s) - START) - 10))
  if [ "$left" -lt 15 ]; then
    names+=("$name"); verdicts+=("skipped (budget spent)"); seconds+=(0)
    return 1
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "=== $name: at most ${cap}s, started $(date +%T)"
  t0=$(date +%s%N)
  timeout --kill-after=5 "$cap" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  case $rc in
    0) verdict=pass ;;
    124 | 137) verdict="FAIL (timed out after ${cap}s)" ;;
    *) verdict="FAIL (exit $rc)" ;;
  esac
  names+=("$name"); verdicts+=("$verdict"); seconds+=("$((ms / 1000)).$(((ms % 1000) / 100))")
  echo "=== $name: $verdict in ${seconds[-1]}s (log: $LOGS/$name.log)"
  if [ "$rc" -ne 0 ]; then tail -n 25 "$LOGS/$name.log" | sed 's/^/    /'; fi
  return "$rc"
}

step_deps() {  # install the carried wheels of whatever does not import; then show where each module comes from
  shopt -s nullglob nocaseglob
  local wheels=() module pattern
  for pair in hydra:hydra_core omegaconf:omegaconf antlr4:antlr4_python3_runtime yaml:pyyaml; do
    module=${pair%%:*}
    pattern=${pair#*:}
    if [ "${GPU_CHECK_FORCE_WHEELS:-0}" = 1 ] || ! "$PY" -c "import $module" 2>/dev/null; then
      local found=("$ROOT"/.whl/"$pattern"-*.whl)
      if [ ${#found[@]} -eq 0 ]; then
        echo "deps: $module does not import and .whl/ has no $pattern wheel: run benchmarks/gpu_check_prepare.sh"
        return 1
      fi
      if [ "${GPU_CHECK_FORCE_WHEELS:-0}" = 1 ] && [[ ${found[0]} != *-none-any.whl ]]; then continue; fi
      wheels+=("${found[@]}")
    fi
  done
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "deps: installing into $SITE: ${wheels[*]##*/}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${wheels[@]}" || return 1
  else
    echo "deps: every module imports already; nothing installed"
  fi
  "$PY" - <<'EOF'
import importlib.metadata as metadata
import importlib.util

import hydra, omegaconf, antlr4, yaml  # noqa: E401,F401  (what the wheels are for must import)

modules = {"hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime", "yaml": "PyYAML",
           "torch": "torch", "lightning": "lightning", "transformers": "transformers", "torchmetrics": "torchmetrics",
           "pytest": "pytest", "hypothesis": "hypothesis", "scipy": "scipy"}
for module, dist in modules.items():
    spec = importlib.util.find_spec(module)
    version = metadata.version(dist) if spec else "MISSING"
    print(f"deps: {module:<13} {version:<14} {spec.origin if spec else ''}")
EOF
}

step_gpu() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  "$PY" - <<'EOF'
import os
import sys

import torch
from torch.utils import cpp_extension

print(f"gpu: python {sys.version.split()[0]}, torch {torch.__version__}, torch CUDA {torch.version.cuda}, "
      f"CUDA_HOME {cpp_extension.CUDA_HOME}, TORCH_CUDA_ARCH_LIST {os.environ.get('TORCH_CUDA_ARCH_LIST')}")
if os.environ.get("REHEARSE") == "1":
    print("gpu: rehearsal on the CPU (GPU_CHECK_REHEARSE=1): no GPU needed")
    sys.exit(0)
if torch.version.cuda is None:
    sys.exit("gpu: NO GPU CHECK POSSIBLE: this torch is a CPU-only build (torch.version.cuda is None)")
if not torch.cuda.is_available():
    sys.exit("gpu: NO GPU CHECK POSSIBLE: torch sees no CUDA device (torch.cuda.is_available() is False)")
if cpp_extension.CUDA_HOME is None:
    print("gpu: WARNING: no CUDA toolkit found (CUDA_HOME, nvcc): setup.py will build the CPU kernels only")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu: device {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
          f"{p.multi_processor_count} SMs")
EOF
}

step_build() {  # in the tree, against the installed torch, no build isolation (setup.py decides CPU or CUDA)
  rm -f "$ROOT"/posttrain/_C*.so
  "$PY" setup.py build_ext --inplace || return 1
  "$PY" - <<'EOF'
import os

import torch  # noqa: F401
from posttrain.ops import _backend

info = _backend.build_info()
print(f"build: {info}")
assert info["built"], "posttrain._C does not import"
assert info["cuda"] or os.environ.get("REHEARSE") == "1", "posttrain._C was built without its CUDA kernels"
EOF
}

step_tests() {
  "$PY" -m pytest -q -ra -p no:cacheprovider tests/ops --junitxml="$LOGS/tests_ops.xml"
}

step_bench_kernels() {
  # the lm-head memory rows run in full in their own step (bench_lm_head)
  "$PY" benchmarks/bench_kernels.py --device "$DEVICE" --quick --time-budget 0.2 --threads 8 \
    --no-lm-head-memory --out "$RESULTS/bench_kernels.json"
}

step_bench_lm_head() {
  if [ "$DEVICE" = cuda ]; then
    "$PY" benchmarks/bench_lm_head.py --device cuda --dtype bfloat16 --out "$RESULTS/bench_lm_head.json"
  else
    "$PY" benchmarks/bench_lm_head.py --device cpu --n 256 --out "$RESULTS/bench_lm_head.json"
  fi
}

export -f step_deps step_gpu step_build step_tests step_bench_kernels step_bench_lm_head

summarise() {
  local total=$(($(date +%s) - START)) i failed=0
  for i in "${!names[@]}"; do [ "${verdicts[$i]}" = pass ] || failed=1; done
  {
    echo "gpu_check: $(date -u +%FT%TZ), ${HOSTNAME:-unknown host}, device $DEVICE, ${total}s of a ${BUDGET_S}s budget"
    printf '%-15s %-34s %8s\n' step verdict seconds
    for i in "${!names[@]}"; do
      printf '%-15s %-34s %8s\n' "${names[$i]}" "${verdicts[$i]}" "${seconds[$i]}"
    done
    [ -f "$LOGS/tests.log" ] && echo "tests: $(grep -E '[0-9]+ (passed|failed)' "$LOGS/tests.log" | tail -n 1)"
    [ -f "$LOGS/build.log" ] && grep -h '^build: ' "$LOGS/build.log"
    if [ -f "$LOGS/bench_lm_head.log" ]; then grep -h 'target peak\|^lm-head' "$LOGS/bench_lm_head.log"; fi
  } | tee "$RESULTS/summary.txt"
  "$PY" - "$RESULTS/summary.json" "$total" "${names[@]}" -- "${verdicts[@]}" -- "${seconds[@]}" <<'EOF'
import json
import sys

out, total, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cut = rest.index("--")
names, rest = rest[:cut], rest[cut + 1:]
cut = rest.index("--")
verdicts, secs = rest[:cut], rest[cut + 1:]
steps = [dict(step=n, verdict=v, seconds=float(s)) for n, v, s in zip(names, verdicts, secs)]
json.dump(dict(total_seconds=total, passed=all(s["verdict"] == "pass" for s in steps), steps=steps),
          open(out, "w"), indent=1)
EOF
  tar -czf "$RESULTS/logs.tar.gz" --exclude='*.ckpt' --exclude='*.safetensors' -C "$RESULTS" logs
  if [ -n "${OUT:-}" ]; then rm -rf "$LOGS"; fi  # few files come back from $OUT: the logs travel packed
  echo "gpu_check: results in $RESULTS"
  return $failed
}

run_step deps 30 bash -c step_deps
if ! run_step gpu 20 bash -c step_gpu && [[ " $STEPS " == *" gpu "* ]]; then
  echo "gpu_check: no usable CUDA GPU here (see above): nothing else is run. On a CPU machine, GPU_CHECK_REHEARSE=1"
  echo "gpu_check: runs the same steps on the CPU."
  summarise
  exit 2
fi
run_step build 180 bash -c step_build
tests_ok=0
run_step tests 120 bash -c step_tests && tests_ok=1
run_step bench_kernels 60 bash -c step_bench_kernels
run_step bench_lm_head 30 bash -c step_bench_lm_head

# The kernels run inside training only once their tests pass; otherwise the run checks bf16 training alone.
if [ "$tests_ok" = 1 ] && [ "$DEVICE" = cuda ]; then export POSTTRAIN_OPS=ext; else export POSTTRAIN_OPS=auto; fi
echo "gpu_check: training runs with POSTTRAIN_OPS=$POSTTRAIN_OPS; overrides: ${TRAIN_COMMON[*]}"
run_step train_grpo 60 "$PY" train.py "${TRAIN_GRPO[@]}" "${TRAIN_COMMON[@]}" "hydra.run.dir=$LOGS/train_grpo" \
  "paths.cache_dir=$LOGS/cache"
run_step train_spin 60 "$PY" train.py "${TRAIN_SPIN[@]}" "${TRAIN_COMMON[@]}" "hydra.run.dir=$LOGS/train_spin" \
  "paths.cache_dir=$LOGS/cache"

summarise
exit $?
