#!/bin/bash
# Everything a lent GPU machine (minutes, one command of at most 10) should do for semlens, in one go:
# the test suite on CUDA, the GPU checks of the shipped models (fp16/bf16 against float32 at 720p and
# 1080p, end-to-end speed, 1080p memory, torch.compile), whether the data path keeps a `base` step fed,
# and a budgeted training run of `base` (x4).
#
# Prepare here first (the GPU image has no PyAV, scikit-video or segment-anything; see
# scripts/gpu_train.py for the pip download command that fills .whl), then run from the repo root
# with .whl carried:   bash scripts/gpu_session.sh        (results under $OUT, at most 8 files)
set -u
OUT=${OUT:-/tmp/semlens-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# the package as installed (the `semlens` executable, the bundled weights as semlens.weights): offline,
# no dependency fetched; needs setuptools in the image
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/tests.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/tests.txt" 2>&1
timeout 140 python3 -m pytest -q -n 8 -p no:cacheprovider tests >> "$OUT/tests.txt" 2>&1
timeout 105 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" > "$OUT/gpu_check.txt" 2>&1
# does the data path keep a base step fed (12 data threads, clips filmed on the GPU)?
timeout 75 python3 benchmarks/data_path.py --device cuda --preset base --steps 6 --workers 12 \
    --out "$OUT/data_path.json" >> "$OUT/gpu_check.txt" 2>&1
timeout 230 python3 scripts/gpu_train.py /tmp/base-x4 --scale 4 --minutes 2.7 --copy-to "$OUT/base-x4" \
    > "$OUT/train.txt" 2>&1
tail -n 5 "$OUT/tests.txt" "$OUT/gpu_check.txt" "$OUT/train.txt"
