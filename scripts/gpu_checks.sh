#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (at most about 13.5 minutes with pytest-xdist: each step has a time limit):
#   1. the GPU speed benchmark   -> OUT/speed_cuda.{json,md}  (python -m benchmarks.speed --device cuda)
#   2. the data-pipeline benchmark with its torchvision column, beside it on the CPU -> OUT/data_speed.{json,md}
#   3. the fast test suite with SMILE_HF_TEST_DEVICE=cuda (the timm tests run wherever timm imports) -> OUT/test_cuda.log
#   4. the timm tests once more on the CPU -> OUT/test_timm_cpu.log
#   5. one epoch from JPEG files, stock fine-tuning against SMILE through the run driver (ResNet-50, ViT-B/16; 2,000
#      images of 500x375, 200 of 2400x1600: the run checks every image before training; written after each model
#      and size, so a time limit leaves what was measured) -> OUT/epoch.{json,md}
# Usage: scripts/gpu_checks.sh OUT_DIR [PYTEST_WORKERS]   (smile_hf importable, e.g. `pip install -e ".[test,timm]"`;
# pytest-xdist and pytest-timeout used where installed)
# Each step has its own time limit so that one slow step cannot eat the others' time; the exit status is 1 if any
# step failed. Copy the results into benchmarks/results/ to publish them.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_checks.sh OUT_DIR [PYTEST_WORKERS]}
WORKERS=${2:-8}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

$PY - <<'EOF' || exit 1
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
for name in ("transformers", "accelerate", "datasets", "huggingface_hub", "peft", "evaluate", "optuna", "timm",
             "torchvision", "smile_hf"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as error:  # noqa: BLE001 - report, go on
        print(name, "does not import:", type(error).__name__, error)
EOF

# 1 and 2 side by side: the data benchmark takes one CPU thread, the speed benchmark the GPU.
timeout 200 $PY -m benchmarks.speed --device cuda --output "$OUT/speed_cuda.json" --markdown "$OUT/speed_cuda.md" \
    >"$OUT/speed_cuda.log" 2>&1 &
speed=$!
timeout 200 $PY -m benchmarks.data_speed --output "$OUT/data_speed.json" --markdown "$OUT/data_speed.md" \
    >"$OUT/data_speed.log" 2>&1 || { echo "data_speed failed"; status=1; }
wait $speed || { echo "speed benchmark failed"; status=1; }
tail -n 40 "$OUT/speed_cuda.log"

# 3: the fast suite on the GPU, one file per worker at a time, each test named in the log as it ends; with
# pytest-timeout a test that hangs is stopped (and named) after 120 s.
# Without pytest-xdist the suite runs in one process, under a longer limit.
per_test=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 120")
parallel=$($PY -c "import xdist" 2>/dev/null && echo "-n $WORKERS --dist loadfile")
limit=$([ -n "$parallel" ] && echo 240 || echo 900)
SMILE_HF_TEST_DEVICE=cuda OMP_NUM_THREADS=1 timeout "$limit" $PY -m pytest -m "not slow" -v -p no:cacheprovider $per_test \
    $parallel -rfEs tests >"$OUT/test_cuda.log" 2>&1 || { echo "cuda tests failed"; status=1; }
tail -n 60 "$OUT/test_cuda.log"

# 4: the timm tests on the CPU.
OMP_NUM_THREADS=2 timeout 60 $PY -m pytest -q -p no:cacheprovider -k timm -rs tests >"$OUT/test_timm_cpu.log" 2>&1 \
    || { echo "timm cpu tests failed"; status=1; }
tail -n 15 "$OUT/test_timm_cpu.log"

# 5: the epoch benchmark (its JPEGs are written under the system's temporary folder first).
timeout 300 $PY -m benchmarks.epoch --device cuda --sizes 500x375:2000,2400x1600:200 --repeats 1 \
    --output "$OUT/epoch.json" --markdown "$OUT/epoch.md" >"$OUT/epoch.log" 2>&1 || { echo "epoch benchmark failed"; status=1; }
tail -n 20 "$OUT/epoch.log"
exit $status
