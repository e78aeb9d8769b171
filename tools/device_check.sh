#!/usr/bin/env bash
# The GPU check on a lent, offline GPU machine (Python 3.12 with a CUDA torch, transformers, numpy,
# scipy, ...; no diffusers, trimesh, PyMCubes, xatlas, fast-simplification, nerfacc, kornia):
#   here:   make device-wheels            (about 15 MiB into .device-wheels/)
#   there:  bash tools/device_check.sh    (carry .device-wheels; logs and results.json in $OUT)
# Extra arguments go to benchmarks/gpu_check.py (e.g. --skip reconstruct, --objects chicken).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
python -m pip install --no-index --no-deps --find-links .device-wheels .device-wheels/*.whl \
    > "$OUT/install.log" 2>&1 || { echo "installing the carried wheels failed: see $OUT/install.log"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
python benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/check.log"
exit "${PIPESTATUS[0]}"
