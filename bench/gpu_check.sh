#!/usr/bin/env bash
# The GPU check in one command, for a machine without network: install this checkout (no dependencies, no build
# isolation: torch, onnx, onnxruntime, click, tqdm, pillow and setuptools must already be there), then run
# `python -m ftadapt.bench.gpu` and leave gpu_bench.json, gpu_bench.log and pip.log in $OUT (default ./gpu-results).
# Should the editable install fail, the package is assembled in a temporary folder with the same layout as the
# installed one (export/, runtime/, bench/ as ftadapt.export, ftadapt.runtime, ftadapt.bench) and put on PYTHONPATH.
#
# An $OUT that already holds files (an earlier run's) is refused before anything is written, unless --overwrite is
# among the arguments.
#
#   bench/gpu_check.sh [--budget-s 300] [--compile] [--skip ITEM ...] [--overwrite]   # arguments go to ftadapt.bench.gpu
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
overwrite=false
for arg in "$@"; do [[ "$arg" == --overwrite ]] && overwrite=true; done
if [[ -n "$(ls -A "$OUT" 2>/dev/null)" ]] && ! $overwrite; then
    echo "gpu_check: $OUT already holds files (an earlier run's?); pass --overwrite to replace them, or set OUT to" \
         "another folder" >&2
    exit 2
fi
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1; then
    echo "gpu_check: 'pip install --no-deps --no-build-isolation -e .' failed (see pip.log); using a source tree" >&2
    tree="$(mktemp -d)"
    trap 'rm -rf "$tree"' EXIT
    cp -rL ftadapt "$tree/ftadapt"
    for sub in export runtime bench; do cp -r "$sub" "$tree/ftadapt/$sub"; done
    export PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "gpu_check: nvidia-smi not available" >&2
PYTHONUNBUFFERED=1 "$PYTHON" -m ftadapt.bench.gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
exit "${PIPESTATUS[0]}"
