# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The GPU preset of the speed benchmark: what a SMILE step costs on realistic models, against the stock `Trainer`.

`python -m benchmarks.speed --device cuda` (or `--preset gpu`) runs this module instead of the CPU benchmark of
`speed.py`. Models built from transformers configs with random weights, at 224 px, bf16 autocast, SGD with Nesterov
momentum 0.9, no gradient clipping (`max_grad_norm=0`), one synthetic batch resident on the device:

    ResNet-50 at batch 48 and at batch 128, ViT-B/16, ConvNeXt-T and Swin-T at batch 64

(a source model with 1000 classes, the teacher's copy of it; a student with the same backbone and 100 classes).
Four things are stepped, each built on its own copy of the models:

* `stock-finetune`: a stock `transformers.Trainer` fine-tuning the student (the model computes its cross-entropy);
* `smiletrainer-finetune`: `SmileTrainer(method="finetune")`, the same step through SmileTrainer's plumbing;
* `smile`: `SmileTrainer(method="smile")`, EMA update every 10 steps included;
* `teacher-forward`: one forward of the SMILE trainer's teacher on the batch, as `compute_loss` runs it
  (`TransferLoss.teacher_forward`: no autograd state, under the trainer's autocast).

Each trainer is stepped the way `Trainer.train` steps it (transformers 5's inner loop, see [`LoopStepper`]): the
step callbacks, `training_step`, the loss's nan/inf filter, the gradient norm the Trainer computes for logging,
`optimizer.step` (accelerate's wrapper), `lr_scheduler.step`, `zero_grad`. For each model it reports:

(a) SMILE step / stock fine-tuning step;
(b) SMILE step / (stock fine-tuning step + one teacher forward) -- the target is <= 1.05: SMILE should cost no more
    than one extra forward of the teacher;
    both as median [quartiles] over interleaved rounds (one call of each of the four per round, shuffled order, each
    ratio from the times of the same round; the raw times are in the JSON);
(c) host syncs per step: the operators that make the host wait for the device, counted by
    `smile_hf.profiling.DispatchCounter` around one whole step (and, for SMILE, around a step with an EMA update);
    on CUDA also the warnings of `torch.cuda.set_sync_debug_mode("warn")` over one step;
(d) kernel launches per step: on CUDA the `cudaLaunchKernel`-like runtime calls `torch.profiler` records over one
    step; everywhere the number of dispatched aten operators (on the CPU the only one, a proxy);
(e) peak memory of one step: on CUDA the allocator's peak (`max_memory_allocated`) above what was allocated before
    the trainer was built; on the CPU what is held between steps plus the peak of the tensors allocated during the
    step (`speed.py`'s tracker).

`--tiny` runs the same code with tiny configs (32 px, batch 4, 3 rounds): a few seconds on the CPU, for tests.

    python -m benchmarks.speed --device cuda                  # -> results/speed_cuda.{json,md}
    python -m benchmarks.speed --device cpu --tiny --output /tmp/s.json --markdown /tmp/s.md
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

from .common import RESULTS_DIR, environment, log, quantiles, write_json, write_text
from .gpu_counts import (
    dispatch_counts,
    ema_step_counts,
    ordinary_step_counts,
    profiled_launches,
    step_memory,
    sync_debug_warnings,
)
from .gpu_models import GPU_MODELS, SOURCE_LABELS, TARGET_LABELS, TINY_MODELS, GpuModelSpec, build_models, device_batch
from .gpu_report import TARGET_SMILE_OVER_FT, TARGET_SMILE_OVER_FT_PLUS_TEACHER, report, targets_met
from .gpu_steppers import MODES, TRAINER_MODES, LoopStepper, TeacherForward, build_trainer
from .stepping import interleaved_step_times


def round_ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per round: the ratios the report gives, from the step times of that round."""
    ft, smile, teacher = times["stock-finetune"], times["smile"], times["teacher-forward"]
    return {
        "smile / stock-finetune": [s / f for s, f in zip(smile, ft)],
        "smile / (stock-finetune + teacher-forward)": [s / (f + t) for s, f, t in zip(smile, ft, teacher)],
        "smiletrainer-finetune / stock-finetune": [s / f for s, f in zip(times["smiletrainer-finetune"], ft)],
        "teacher-forward / stock-finetune": [t / f for t, f in zip(teacher, ft)],
    }


def build_steppers(spec: GpuModelSpec, opts) -> tuple[dict[str, object], dict[str, dict]]:
    """The four steppers of `spec` on one device batch, and the peak memory of each trainer's step."""
    source, student = build_models(spec)
    batch = device_batch(spec, opts.device)
    steppers, memory = {}, {}
    for mode in TRAINER_MODES:
        steppers[mode], memory[mode] = step_memory(
            lambda: LoopStepper(build_trainer(mode, spec, source, student, opts), batch, opts.device), opts.device
        )
    steppers["teacher-forward"] = TeacherForward(steppers["smile"])
    return steppers, memory


def benchmark_model(spec: GpuModelSpec, opts) -> dict:
    cuda = opts.device.startswith("cuda")
    result = {
        "description": spec.description,
        "image_size": spec.image_size,
        "batch_size": spec.batch_size,
        "rounds": opts.rounds,
        "warmup_rounds": opts.warmup,
    }
    log(f"[{spec.name}] {spec.description}, {spec.image_size}px, batch {spec.batch_size}: building")
    steppers, result["memory"] = build_steppers(spec, opts)
    smile = steppers["smile"].trainer
    result["parameters_m"] = sum(p.numel() for p in steppers["stock-finetune"].trainer.model.parameters()) / 1e6
    result["ema_update_every"] = smile.args.ema_update_every

    log(f"[{spec.name}] step times, {opts.rounds} interleaved rounds")
    times = interleaved_step_times(steppers, opts.rounds, warmup=opts.warmup)
    result["times_ms"] = {m: [1e3 * t for t in ts] for m, ts in times.items()}
    result["step_ms"] = {m: quantiles(ts) for m, ts in result["times_ms"].items()}
    result["ratio"] = {name: quantiles(values) for name, values in round_ratios(times).items()}

    log(f"[{spec.name}] host syncs and operators per step")
    counts = {m: {"step": ordinary_step_counts(steppers[m])} for m in TRAINER_MODES}
    counts["smile"]["ema_step"] = ema_step_counts(steppers["smile"])
    counts["teacher-forward"] = {"step": dispatch_counts(steppers["teacher-forward"])}
    result["counts"] = counts
    if cuda:
        log(f"[{spec.name}] sync debug mode and profiled kernel launches")
        result["sync_debug_warnings"] = {m: sync_debug_warnings(steppers[m]) for m in MODES}
        result["cuda_profile"] = {m: profiled_launches(steppers[m]) for m in MODES}
    del steppers, smile
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return result


def gpu_environment(device: str) -> dict:
    import accelerate

    env = environment()
    env["accelerate"] = accelerate.__version__
    if device.startswith("cuda"):
        env["cuda_version"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return env


def default_paths(device: str, tiny: bool) -> tuple[str, str]:
    """Where results go without --output/--markdown: results/speed_cuda.* for the preset on CUDA; a CPU run of the
    preset (never a committed result) and any --tiny run go to the temporary directory."""
    if device.startswith("cuda") and not tiny:
        stem = os.path.join(RESULTS_DIR, "speed_cuda")
    else:
        stem = os.path.join(
            tempfile.gettempdir(), f"smile_speed_gpu_preset{'_tiny' if tiny else ''}_{device.split(':')[0]}"
        )
    return stem + ".json", stem + ".md"


def run(opts, argv=None) -> dict:
    """Measure the preset (`opts` from `speed.parse_args`), write the JSON and the markdown, return the payload."""
    specs = TINY_MODELS if opts.tiny else GPU_MODELS
    names = opts.models.split(",") if opts.models else list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown} for the GPU preset; known: {', '.join(specs)}.")
    opts = SimpleNamespace(**vars(opts))
    opts.bf16 = True  # the preset's precision
    opts.rounds = opts.rounds or (3 if opts.tiny else 50)
    opts.warmup = 1 if opts.tiny else 10
    payload = {
        "environment": gpu_environment(opts.device),
        "settings": {
            "section": "gpu",
            "preset": "gpu",
            "tiny": bool(opts.tiny),
            "device": opts.device,
            "bf16": True,
            "optimizer": "SGD, Nesterov momentum 0.9, lr 0.01, weight decay 1e-4, max_grad_norm 0",
            "source_labels": SOURCE_LABELS,
            "target_labels": TARGET_LABELS,
            "modes": list(MODES),
            "command": " ".join(["python", "-m", "benchmarks.speed", *(argv if argv is not None else sys.argv[1:])]),
            "targets": {
                "smile_over_stock_finetune_max": TARGET_SMILE_OVER_FT,
                "smile_over_stock_finetune_plus_teacher_forward_max": TARGET_SMILE_OVER_FT_PLUS_TEACHER,
            },
        },
        "models": {},
    }
    started = time.time()
    for name in names:
        payload["models"][name] = benchmark_model(specs[name], opts)
    payload["settings"]["wall_seconds"] = round(time.time() - started, 1)
    payload["targets_met"] = targets_met(payload)
    text = report(payload)
    print(text)
    output, markdown = default_paths(opts.device, opts.tiny)
    write_json(opts.output or output, payload)
    write_text(opts.markdown or markdown, text)
    return payload


def report_only(opts) -> dict:
    """Measure nothing: print (and write to --markdown) the report of the JSON at --output (default: the preset's)."""
    import json

    output, markdown = default_paths(opts.device, opts.tiny)
    with open(opts.output or output, encoding="utf-8") as f:
        payload = json.load(f)
    text = report(payload)
    print(text)
    write_text(opts.markdown or markdown, text)
    return payload
