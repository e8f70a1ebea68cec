# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The LoRA section of the speed benchmark (`python -m benchmarks.speed --lora`): what SMILE costs with LoRA (the
teacher an EMA adapter on the student's frozen base) against LoRA fine-tuning and full training, and its report."""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass

import transformers

from .common import device_line, environment, fmt_q, log, markdown_table, quantiles
from .memory import peak_step_memory, storage_bytes
from .speed_cpu import ema_update_times, model_header, random_batch
from .speed_models import BenchmarkModelSpec, build_models, small_cnn_config
from .stepping import SteppedTrainer, interleaved_step_times, step_time_summary


@dataclass(frozen=True)
class LoraModelSpec(BenchmarkModelSpec):
    target_modules: tuple[str, ...]  # the LoRA layers
    rank: int


def vit_b_config(num_labels: int, image_size: int) -> transformers.ViTConfig:
    return transformers.ViTConfig(
        image_size=image_size, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, num_labels=num_labels,
    )  # fmt: skip


LORA_MODELS = {
    "tiny-cnn": LoraModelSpec(
        "tiny-cnn", "ResNet, 3 basic stages 16/32/64 (the bundled checkpoint's architecture), 32x32; LoRA r=4 on "
        "every convolution", small_cnn_config, 32, 32, 20, ("convolution",), 4,
    ),
    "tiny-vit": LoraModelSpec(
        "tiny-vit", "ViT, 64 wide, 4 layers, 4 heads, patch 8, 32x32; LoRA r=8 on q_proj, v_proj",
        lambda n: transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=256, num_labels=n,
        ),
        32, 16, 20, ("q_proj", "v_proj"), 8,
    ),
    "vit-b-64": LoraModelSpec(
        "vit-b-64", "ViT-B/16 (768 wide, 12 layers, 12 heads; google/vit-base-patch16-224's shape, random weights) "
        "at 64x64 (17 tokens); LoRA r=16 on q_proj, v_proj", lambda n: vit_b_config(n, 64), 64, 8, 10,
        ("q_proj", "v_proj"), 16,
    ),
    "vit-b-224": LoraModelSpec(
        "vit-b-224", "the same ViT-B/16 at 224x224 (197 tokens); LoRA r=16 on q_proj, v_proj",
        lambda n: vit_b_config(n, 224), 224, 4, 4, ("q_proj", "v_proj"), 16,
    ),
}  # fmt: skip


LORA_MODES = {  # mode -> (method, LoRA?)
    "lora-finetune": ("finetune", True),
    "lora-smile": ("smile", True),
    "full-finetune": ("finetune", False),
    "full-smile": ("smile", False),
}


TARGET_LORA_MEMORY_RATIO = 1.10


def lora_config(spec: LoraModelSpec):
    from peft import LoraConfig

    return LoraConfig(r=spec.rank, lora_alpha=spec.rank, target_modules=list(spec.target_modules))


def benchmark_lora_model(spec: LoraModelSpec, opts) -> dict:
    """SMILE and fine-tuning, each with LoRA adapters (the SMILE teacher an EMA adapter on the shared frozen base)
    and in full (every weight trained; the SMILE teacher a full copy): step times interleaved in rounds (ratios to
    LoRA fine-tuning's step of the same round), held and peak memory of one step, teacher size, one EMA update."""
    rounds = opts.rounds or spec.rounds
    source, student = build_models(spec)
    batch = random_batch(spec, opts.device)
    result = model_header(spec, student, rounds)
    result["lora"] = {"r": spec.rank, "lora_alpha": spec.rank, "target_modules": list(spec.target_modules)}
    log(f"[lora {spec.name}] {spec.description}, batch {spec.batch_size}: building {len(LORA_MODES)} trainers")
    steppers = {
        mode: SteppedTrainer(method, spec, source, student, batch, opts, lora_config(spec) if lora else None)
        for mode, (method, lora) in LORA_MODES.items()
    }
    del source, student
    gc.collect()
    result["trainable_parameters_m"] = {
        mode: sum(p.numel() for p in st.trainer.model.parameters() if p.requires_grad) / 1e6 for mode, st in steppers.items()
    }
    result["teacher_mib"] = {
        mode: storage_bytes(st.teacher_storages()) / 2**20 for mode, st in steppers.items() if st.trainer.teacher
    }

    log(f"[lora {spec.name}] step times, {rounds} interleaved rounds")
    times = interleaved_step_times(steppers, rounds, warmup=3)
    result.update(step_time_summary(times, "lora-finetune"))
    smile_steps = zip(times["lora-smile"], times["full-smile"])
    result["lora_smile_over_full_smile_time"] = quantiles([t / f for t, f in smile_steps])

    log(f"[lora {spec.name}] EMA update")
    result["ema_update_ms"] = {}
    for mode in ("lora-smile", "full-smile"):
        result["ema_update_ms"][mode] = quantiles(ema_update_times(steppers[mode].trainer, opts.device, repeats=10))

    log(f"[lora {spec.name}] peak memory")
    memory = result["memory"] = {m: peak_step_memory(st) for m, st in steppers.items()}
    result["memory_ratio"] = {
        "lora-smile / lora-finetune": memory["lora-smile"]["peak_mib"] / memory["lora-finetune"]["peak_mib"],
        "lora-smile / full-smile": memory["lora-smile"]["peak_mib"] / memory["full-smile"]["peak_mib"],
        "lora-finetune / full-finetune": memory["lora-finetune"]["peak_mib"] / memory["full-finetune"]["peak_mib"],
        "full-smile / full-finetune": memory["full-smile"]["peak_mib"] / memory["full-finetune"]["peak_mib"],
    }
    del steppers
    gc.collect()
    return result


def lora_report(payload: dict) -> str:
    models = payload["models"]
    names = list(models)
    env = payload["environment"]
    lines = [
        "## SMILE with LoRA: what the shared-base teacher costs",
        "",
        device_line(payload, f", peft {env.get('peft')}")
        + ". Random weights from configs; same batch and optimiser (SGD Nesterov) for every mode.",
        "",
        "Modes: `lora-*` train LoRA adapters and the new head (`SmileTrainer(..., peft_config=LoraConfig(...))`); the "
        "LoRA SMILE teacher is a second adapter on the student's frozen base (an EMA of the student's adapter). "
        "`full-*` train every weight; the full SMILE teacher is a full copy of the model. Peak memory: what is held "
        "between steps (parameters, buffers, optimizer state, teacher, method state) plus the peak of the tensors "
        "allocated during one step "
        + (
            "(the CUDA allocator's peak above what was allocated before the step)."
            if payload["settings"]["device"].startswith("cuda")
            else "(a dispatch-mode tracker of live storages)."
        )
        + " Step times: interleaved rounds, one step of every mode per round in a shuffled order, each divided by "
        "LoRA fine-tuning's step of the same round (median [quartiles]); EMA updates (every 10 steps) included.",
        "",
    ]
    header = [""] + [f"{n} ({models[n]['parameters_m']:.2f}M params, {models[n]['image_size']}px, batch "
                     f"{models[n]['batch_size']})" for n in names]  # fmt: skip
    rows = []
    ratio = "lora-smile / lora-finetune"
    rows.append(
        [f"**peak memory, SMILE-LoRA / FT-LoRA** (target ≤ {TARGET_LORA_MEMORY_RATIO:.2f})"]
        + [
            f"**{models[n]['memory_ratio'][ratio]:.3f}** "
            f"{'✓' if models[n]['memory_ratio'][ratio] <= TARGET_LORA_MEMORY_RATIO else '✗'}"
            for n in names
        ]
    )
    rows.append(["peak memory, SMILE-LoRA / full SMILE"] + [f"{models[n]['memory_ratio']['lora-smile / full-smile']:.3f}" for n in names])
    rows.append(["peak memory, full SMILE / full FT"] + [f"{models[n]['memory_ratio']['full-smile / full-finetune']:.3f}" for n in names])
    rows.append(["peak memory, FT-LoRA / full FT"] + [f"{models[n]['memory_ratio']['lora-finetune / full-finetune']:.3f}" for n in names])
    rows.append(["**step time, SMILE-LoRA / FT-LoRA**"] + [f"**{fmt_q(models[n]['ratio']['lora-smile'])}**" for n in names])
    rows.append(["step time, SMILE-LoRA / full SMILE"] + [fmt_q(models[n]["lora_smile_over_full_smile_time"]) for n in names])
    for mode in LORA_MODES:
        rows.append([f"{mode}: peak MiB = held + step peak"] + [
            f"{models[n]['memory'][mode]['peak_mib']:.1f} = {models[n]['memory'][mode]['held_mib']:.1f} + "
            f"{models[n]['memory'][mode]['step_peak_mib']:.1f}" for n in names
        ])  # fmt: skip
    for mode in ("lora-smile", "full-smile"):
        rows.append([f"{mode}: teacher MiB (its own tensors)"] + [f"{models[n]['teacher_mib'][mode]:.2f}" for n in names])
    for mode in LORA_MODES:
        rows.append([f"{mode}: trainable parameters (M)"] + [f"{models[n]['trainable_parameters_m'][mode]:.3f}" for n in names])
    for mode in LORA_MODES:
        rows.append([f"{mode}: step time / FT-LoRA"] + [fmt_q(models[n]["ratio"][mode]) for n in names])
    rows.append(["FT-LoRA step (ms)"] + [f"{models[n]['step_ms']['lora-finetune']['median']:.1f}" for n in names])
    for mode in ("lora-smile", "full-smile"):
        rows.append([f"one EMA update, {mode} (ms)"] + [f"{models[n]['ema_update_ms'][mode]['median']:.2f}" for n in names])
    lines += [markdown_table(header, rows), ""]
    lines += ["Models: " + "; ".join(f"{n}: {models[n]['description']}" for n in names) + ".", ""]
    lines += [f"Command: `{payload['settings']['command']}` ({payload['settings'].get('wall_seconds', '?')} s).", ""]
    return "\n".join(lines)


def lora_main(opts, argv) -> dict:
    import peft

    names = opts.models.split(",") if opts.models else list(LORA_MODELS)
    unknown = [n for n in names if n not in LORA_MODELS]
    if unknown:
        raise SystemExit(f"Unknown LoRA model(s) {unknown}; known: {', '.join(LORA_MODELS)}.")
    env = environment()
    env["peft"] = peft.__version__
    payload = {
        "environment": env,
        "settings": {
            "section": "lora",
            "device": opts.device,
            "bf16": opts.bf16,
            "modes": list(LORA_MODES),
            "command": " ".join(["python", "-m", "benchmarks.speed", *(argv if argv is not None else sys.argv[1:])]),
            "targets": {"lora_smile_over_lora_finetune_memory_max": TARGET_LORA_MEMORY_RATIO},
        },
        "models": {},
    }
    started = time.time()
    for name in names:
        payload["models"][name] = benchmark_lora_model(LORA_MODELS[name], opts)
    payload["settings"]["wall_seconds"] = round(time.time() - started, 1)
    return payload
