# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What each method costs per optimizer step, relative to plain fine-tuning, on the same model and batch.

For a small CNN (the architecture of the bundled source checkpoint), a ResNet-50-sized CNN and a ViT (random weights
from configs), it measures:

1. **Step-time ratios.** One `SmileTrainer` per method, all on the same model, batch and optimiser (the reference
   recipe: SGD, Nesterov momentum 0.9). Each is stepped the way `Trainer.train` steps it (`training_step`, i.e.
   `compute_loss` under the trainer's autocast + `accelerator.backward`, then `optimizer.step`, `lr_scheduler.step`,
   `zero_grad` and the `on_step_end` callbacks, so SMILE's EMA update every `ema_update_every` steps is included).
   The methods are interleaved in one process, one step each per round in a shuffled order, and each method's step
   time is divided by fine-tuning's of the same round: the median and quartiles of these ratios are reported, so
   that the load of other processes on the machine cancels out as far as it can.
2. **Where the time goes** (a profile): the same steps of every method written as a bare PyTorch loop around the
   standalone `TransferLoss` (`benchmarks/bare_loop.py`: a `RegularizerContext` built by hand, the teacher, mixing, the
   loss terms), timed phase by phase.
3. **The EMA update**: the time of one `EmaTeacher.update` (one fused `torch._foreach_lerp_`), and its share of a
   SMILE step, amortised over `ema_update_every` steps and per step.
4. **Peak memory** of one step of each method: the parameters, buffers and optimizer state held between steps
   (student, auxiliary head, teacher) plus the peak of the tensors allocated during the step (on CUDA the
   allocator's peak above what was allocated before the step; on the CPU tracked by a dispatch mode).
5. **SmileTrainer against a bare loop**: real `SmileTrainer.train()` runs against a bare PyTorch loop doing the same
   SMILE step (same dataset, collator, optimiser, EMA schedule), in alternating chunks of steps; the ratio of their
   mean step times (data loading, logging and callbacks included) is reported per chunk pair.

Outputs a markdown report (stdout and `--markdown`) and the raw numbers as JSON (`--output`).

    python -m benchmarks.speed                                  # all three models, ~10 minutes on 2 CPU cores
    python -m benchmarks.speed --models small-cnn --rounds 10   # quick look
    python -m benchmarks.speed --lora                           # only the LoRA section -> results/lora.{json,md}
    python -m benchmarks.speed --device cuda                    # the GPU preset (benchmarks/speed_gpu.py)

On a CUDA device (or with `--preset gpu`; `--tiny` for tiny configs) the GPU preset of `speed_gpu.py` runs instead:
ResNet-50, ViT-B/16, ConvNeXt-T and Swin-T at 224 px in bf16, SMILE against the stock `Trainer`, with host syncs,
kernel launches and peak memory per step -> results/speed_cuda.{json,md}. `--preset cpu` runs this module's
benchmark on any device.

With `--lora` it measures instead what SMILE costs with LoRA (`SmileTrainer(..., peft_config=LoraConfig(...))`,
the teacher an EMA adapter on the student's frozen base) against LoRA fine-tuning, and against full training (every
weight trained, the SMILE teacher a full copy), on a tiny CNN, a tiny ViT and a ViT-B/16-shaped model (at 64 and 224
px): peak memory of one step (as in 4.) and step times interleaved in rounds (as in 1.), as ratios to LoRA
fine-tuning (~8 minutes on 2 shared CPU cores, most of it the 224 px ViT-B).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import transformers

from .common import METHODS, RESULTS_DIR, TARGET_RATIO, available_methods, environment, log, publish
from .speed_cpu import TARGET_EMA_SHARE, TARGET_TRAINER_OVERHEAD, benchmark_model, report
from .speed_lora import LORA_MODELS, lora_main, lora_report
from .speed_models import MODELS


def load_average() -> list[float]:
    """The machine's load average over 1, 5 and 15 minutes (what `uptime` prints)."""
    return [round(x, 2) for x in os.getloadavg()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--lora", action="store_true", help="run only the LoRA section (SMILE-LoRA against "
                        "FT-LoRA and full training) -> results/lora.{json,md}")  # fmt: skip
    parser.add_argument("--models", default=None, help=f"comma-separated, from {', '.join(MODELS)} (default: all); "
                        f"with --lora from {', '.join(LORA_MODELS)} (default: all)")  # fmt: skip
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (finetune is always in)")
    parser.add_argument("--teacher_variants", default="", help="SMILE teacher options "
                        "stepped beside plain SMILE as smile[<variant>] (from fold, cl, fold+cl, compile, bf16; "
                        "default: none)")  # fmt: skip
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall", help="step times by the wall clock, "
                        "or by the CPU time of the stepping thread (CPU, 1 torch thread: steadier on a loaded "
                        "machine)")  # fmt: skip
    parser.add_argument("--memory_methods", default="finetune,smile", help="methods whose peak memory is measured")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: per model)")
    parser.add_argument("--chunks", type=int, default=None, help="trainer-vs-bare chunk pairs (0 skips it)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1: "
                        "steadier timings on a shared machine)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (student and teacher)")
    parser.add_argument("--output", default=None, help="JSON results (default: results/speed.json, with --lora "
                        "results/lora.json)")  # fmt: skip
    parser.add_argument("--markdown", default=None, help="markdown report (default: results/speed.md, with --lora "
                        "results/lora.md)")  # fmt: skip
    parser.add_argument("--report_only", action="store_true", help="measure nothing: print the report of --output")
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None, help="cpu: the three small models above; "
                        "gpu: realistic models at 224 px, bf16, against the stock Trainer (benchmarks/speed_gpu.py, "
                        "-> results/speed_cuda.{json,md} on CUDA). Default: gpu on a CUDA device, else cpu")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="the gpu preset with tiny configs (seconds on the CPU; "
                        "writes to the temporary directory unless --output/--markdown)")  # fmt: skip
    opts = parser.parse_args(argv)
    if opts.preset is None:
        opts.preset = "gpu" if (opts.tiny or opts.device.startswith("cuda")) and not opts.lora else "cpu"
    if opts.tiny and opts.preset != "gpu":
        parser.error("--tiny runs the gpu preset: drop --preset cpu (or --lora)")
    if opts.preset == "gpu" and opts.lora:
        parser.error("--lora has no gpu preset: pass --preset cpu")
    if opts.preset == "gpu":  # speed_gpu picks its own default paths
        return opts
    stem = "lora" if opts.lora else "speed"
    if opts.output is None:
        opts.output = os.path.join(RESULTS_DIR, f"{stem}.json")
    if opts.markdown is None:
        opts.markdown = os.path.join(RESULTS_DIR, f"{stem}.md")
    opts.memory_methods = [m.strip() for m in opts.memory_methods.split(",") if m.strip()]
    opts.teacher_variants = [v.strip() for v in opts.teacher_variants.split(",") if v.strip()]
    return opts


def main(argv=None) -> dict:
    opts = parse_args(argv)
    if opts.preset == "gpu":
        from . import speed_gpu

        if opts.report_only:
            return speed_gpu.report_only(opts)
        if opts.device == "cpu":
            torch.set_num_threads(opts.threads)
        transformers.logging.set_verbosity_error()
        return speed_gpu.run(opts, argv)
    if opts.report_only:
        with open(opts.output, encoding="utf-8") as f:
            payload = json.load(f)
        text = (lora_report if payload["settings"].get("section") == "lora" else report)(payload)
        publish(text, payload, None, opts.markdown)  # the JSON is the input here: not written again
        return payload
    if opts.device == "cpu":
        torch.set_num_threads(opts.threads)
    transformers.logging.set_verbosity_error()
    if opts.lora:
        payload = lora_main(opts, argv)
        publish(lora_report(payload), payload, opts.output, opts.markdown)
        return payload
    opts.models = opts.models or ",".join(MODELS)
    unknown = [m for m in opts.models.split(",") if m not in MODELS]
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}; known: {', '.join(MODELS)}.")
    requested = ["finetune"] + [m.strip() for m in opts.methods.split(",") if m.strip() and m.strip() != "finetune"]
    methods, missing = available_methods(requested)
    if missing:
        log(f"not in this install of smile_hf, skipped: {', '.join(missing)}")
    payload = {
        "environment": environment(),
        "settings": {
            "device": opts.device,
            "bf16": opts.bf16,
            "methods": methods,
            "teacher_variants": opts.teacher_variants if "smile" in methods else [],
            "clock": opts.clock,
            "missing_methods": missing,
            "command": " ".join(["python", "-m", "benchmarks.speed", *(argv if argv is not None else sys.argv[1:])]),
            "targets": {
                "smile_ratio_max": TARGET_RATIO,
                "ema_share_max": TARGET_EMA_SHARE,
                "trainer_over_bare_max": TARGET_TRAINER_OVERHEAD,
            },
        },
        "models": {},
    }
    started, load_start = time.time(), load_average()
    for name in opts.models.split(","):
        payload["models"][name] = benchmark_model(MODELS[name], methods, opts)
    payload["settings"]["wall_seconds"] = round(time.time() - started, 1)
    payload["settings"]["load_average"] = {"start": [round(x, 2) for x in load_start], "end": load_average()}
    publish(report(payload), payload, opts.output, opts.markdown)
    return payload


if __name__ == "__main__":
    main()
