#!/usr/bin/env bash
# Compile-checks every csrc/cuda/*.cu with nvcc alone (no GPU, no torch CUDA headers needed), for two
# architectures, into a temporary directory. Fails on any error or warning; skips when nvcc is absent.
#   POSTTRAIN_CUDA_ARCHS="90 80" (default) selects the sm_XX targets.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  echo "compile_cuda: nvcc not found on PATH; skipping the CUDA compile check"
  exit 0
fi
archs=${POSTTRAIN_CUDA_ARCHS:-"90 80"}
gencode=()
for a in $archs; do gencode+=(-gencode "arch=compute_${a},code=sm_${a}"); done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob
files=(csrc/cuda/*.cu)
if [ ${#files[@]} -eq 0 ]; then
  echo "compile_cuda: no .cu files"
  exit 0
fi
status=0
for f in "${files[@]}"; do
  out="$tmp/$(basename "$f" .cu).o"
  if nvcc -c -std=c++17 -O3 --use_fast_math -Werror all-warnings -Icsrc "${gencode[@]}" "$f" -o "$out"; then
    echo "compile_cuda: ok   $f (sm_${archs// /, sm_})"
  else
    echo "compile_cuda: FAIL $f"
    status=1
  fi
done
exit $status
