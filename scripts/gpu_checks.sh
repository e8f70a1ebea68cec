#!/usr/bin/env bash
# The checks that need a CUDA GPU (each step has a time limit; all six take at most about 19.5 minutes with
# pytest-xdist, so on a machine lent for less, run them in two calls: STEPS="1 2 3 4", then STEPS="5 6"):
#   1. the GPU speed benchmark   -> OUT/speed_cuda.{json,md}  (python -m benchmarks.speed --device cuda)
#   2. the data-pipeline benchmark with its torchvision column, beside it on the CPU -> OUT/data_speed.{json,md}
#   3. the fast test suite with SMILE_HF_TEST_DEVICE=cuda (the timm tests run wherever timm imports) -> OUT/test_cuda.log
#   4. the timm tests once more on the CPU -> OUT/test_timm_cpu.log
#   5. SmileTrainer under FSDP2 (accelerate launch --use_fsdp --fsdp_version 2, one process per GPU) -> OUT/fsdp2.log
#   6. one epoch from JPEG files, stock fine-tuning against SMILE through the run driver (ResNet-50, ViT-B/16; 2,000
#      images of 500x375, 200 of 2400x1600: the run checks every image before training; written after each model
#      and size, so a time limit leaves what was measured) -> OUT/epoch.{json,md}
# Usage: [STEPS="1 2 ..."] scripts/gpu_checks.sh OUT_DIR [PYTEST_WORKERS]   (smile_hf importable, e.g. `pip install -e ".[test,timm]"`;
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
STEPS=" ${STEPS:-1 2 3 4 5 6} "
want() { [[ $STEPS == *" $1 "* ]]; }

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

if want 1 || want 2; then
# 1 and 2 side by side: the data benchmark takes one CPU thread, the speed benchmark the GPU.
timeout 200 $PY -m benchmarks.speed --device cuda --output "$OUT/speed_cuda.json" --markdown "$OUT/speed_cuda.md" \
    >"$OUT/speed_cuda.log" 2>&1 &
speed=$!
timeout 200 $PY -m benchmarks.data_speed --output "$OUT/data_speed.json" --markdown "$OUT/data_speed.md" \
    >"$OUT/data_speed.log" 2>&1 || { echo "data_speed failed"; status=1; }
wait $speed || { echo "speed benchmark failed"; status=1; }
tail -n 40 "$OUT/speed_cuda.log"
fi

if want 3; then
# 3: the fast suite on the GPU, one file per worker at a time, each test named in the log as it ends; with
# pytest-timeout a test that hangs is stopped (and named) after 120 s.
# Without pytest-xdist the suite runs in one process, under a longer limit.
per_test=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 120")
parallel=$($PY -c "import xdist" 2>/dev/null && echo "-n $WORKERS --dist loadfile")
limit=$([ -n "$parallel" ] && echo 240 || echo 900)
SMILE_HF_TEST_DEVICE=cuda OMP_NUM_THREADS=1 timeout "$limit" $PY -m pytest -m "not slow" -v -p no:cacheprovider $per_test \
    $parallel -rfEs tests >"$OUT/test_cuda.log" 2>&1 || { echo "cuda tests failed"; status=1; }
tail -n 60 "$OUT/test_cuda.log"
fi

if want 4; then
# 4: the timm tests on the CPU.
OMP_NUM_THREADS=2 timeout 60 $PY -m pytest -q -p no:cacheprovider -k timm -rs tests >"$OUT/test_timm_cpu.log" 2>&1 \
    || { echo "timm cpu tests failed"; status=1; }
tail -n 15 "$OUT/test_timm_cpu.log"
fi

if want 5; then
# 5: SMILE under FSDP2 through Accelerate's plugin, in bf16, on the digits preset from the bundled checkpoint: 4 steps
# saving at 2 and 4, then the same run resumed from checkpoint-2 in another folder. Checked: the checkpoint is sharded
# (marker "sharding": "fsdp2", the method state in sharded_state/, the teacher's shadow in float32), the saved model is
# one full model without teacher or auxiliary head, and the resumed run ends where the uninterrupted one does.
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
FSDP_RUN=(--dataset digits --model_name_or_path checkpoints/fmnist-resnet-tiny --train_samples_per_class 4
          --max_eval_samples 40 --method smile --max_steps 4 --save_steps 2 --per_device_train_batch_size 8
          --ema_update_every 1 --ema_decay 0.5 --bf16 True --report_to none --disable_tqdm True)
LAUNCH=($PY -m accelerate.commands.launch --num_processes "$GPUS" --use_fsdp --fsdp_version 2 --mixed_precision bf16)
{ timeout 150 "${LAUNCH[@]}" examples/run_smile.py "${FSDP_RUN[@]}" --output_dir "$OUT/fsdp2" \
  && timeout 150 "${LAUNCH[@]}" examples/run_smile.py "${FSDP_RUN[@]}" --output_dir "$OUT/fsdp2_resumed" \
       --resume_from_checkpoint "$OUT/fsdp2/checkpoint-2" \
  && timeout 60 $PY - "$OUT" <<'EOF'
import json, os, sys
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForImageClassification

out = sys.argv[1]
checkpoint = os.path.join(out, "fsdp2", "checkpoint-2")
marker = json.load(open(os.path.join(checkpoint, "checkpoint_complete.json")))
assert marker.get("sharding") == "fsdp2", marker
assert not os.path.exists(os.path.join(checkpoint, "method_state.safetensors"))
saved = FileSystemReader(os.path.join(checkpoint, "sharded_state")).read_metadata().state_dict_metadata
teacher = {k: v.properties.dtype for k, v in saved.items() if k.startswith("teacher.model.") and hasattr(v, "properties")}
assert teacher and all(d == torch.float32 for d in teacher.values()), teacher
full = load_file(os.path.join(out, "fsdp2", "model.safetensors"))
assert not [k for k in full if "smile_source_head" in k or k.startswith("teacher")], sorted(full)[:5]
AutoModelForImageClassification.from_pretrained(os.path.join(out, "fsdp2"))  # one full model of its class
resumed = load_file(os.path.join(out, "fsdp2_resumed", "model.safetensors"))
gap = max((full[k].float() - resumed[k].float()).abs().max().item() for k in full)
print(f"FSDP2: {len(teacher)} teacher tensors in float32, {len(full)} saved tensors, resumed vs uninterrupted {gap:.2e}")
assert gap <= 1e-3, gap  # GPU kernels (cuDNN's backward) need not add in the same order twice
EOF
} >"$OUT/fsdp2.log" 2>&1 || { echo "FSDP2 check failed"; status=1; }
tail -n 30 "$OUT/fsdp2.log"
fi

if want 6; then
# 6: the epoch benchmark (its JPEGs are written under the system's temporary folder first).
timeout 300 $PY -m benchmarks.epoch --device cuda --sizes 500x375:2000,2400x1600:200 --repeats 1 \
    --output "$OUT/epoch.json" --markdown "$OUT/epoch.md" >"$OUT/epoch.log" 2>&1 || { echo "epoch benchmark failed"; status=1; }
tail -n 20 "$OUT/epoch.log"
fi
exit $status
