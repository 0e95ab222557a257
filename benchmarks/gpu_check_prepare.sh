#!/usr/bin/env bash
# Run on a machine with PyPI access before benchmarks/gpu_check.sh is taken to a GPU machine without a network:
# puts the wheels of the Python packages that machine lacks, for CPython 3.12 on x86-64 Linux, in .whl/ at the
# repository root (git-ignored). The versions are the ones installed here, so both machines run the same config code.
#
#   bash benchmarks/gpu_check_prepare.sh            # then carry .whl/ with the working tree
#
# hydra-core and omegaconf are pure-Python wheels. omegaconf 2.3 needs antlr4-python3-runtime 4.9.*, which PyPI has
# only as a source archive: it is built here into a pure-Python (py3-none-any) wheel. PyYAML (omegaconf's other
# requirement) is compiled: its CPython 3.12 wheel comes along in case the GPU machine lacks it; gpu_check.sh
# installs only what does not import there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
mkdir -p "$dest"

version() {  # the installed version of a distribution, or a clear error
  python3 -m pip show "$1" 2>/dev/null | awk '/^Version:/{print $2}' | grep . \
    || { echo "gpu_check_prepare: $1 is not installed here; install the project (pip install -e .) first" >&2; exit 1; }
}

platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest" "$1"
}

rm -f "$dest"/*.whl  # one version of each: two of the same package stop the whole install there
download "hydra-core==$(version hydra-core)"
download "omegaconf==$(version omegaconf)"
download "PyYAML==$(version PyYAML)"
antlr="antlr4-python3-runtime==$(version antlr4-python3-runtime)"
if ! download "$antlr" 2>/dev/null; then
  python3 -m pip wheel -q --no-deps --no-binary=:all: -w "$dest" "$antlr"
fi

echo "gpu_check_prepare: wheels in $dest/ (carry it with the working tree; $(du -sh "$dest" | cut -f1)):"
for w in "$dest"/*.whl; do
  echo "  $(basename "$w")"
  case "$(basename "$w")" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-*manylinux*x86_64*.whl) ;;
    *) echo "gpu_check_prepare: $w is not for CPython 3.12 on x86-64 Linux" >&2; exit 1 ;;
  esac
done
