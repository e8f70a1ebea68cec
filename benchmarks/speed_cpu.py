# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The CPU speed benchmark of one model (step-time ratios, profile, EMA update, peak memory, SmileTrainer against
the bare loop) and its report."""

from __future__ import annotations

import gc
import time

import numpy as np
import torch
from torch import nn

from smile_hf.backbones import unwrap_model

from .bare_loop import step_profile, trainer_vs_bare
from .common import TARGET_RATIO, device_line, fmt_q, log, markdown_table, quantiles
from .memory import peak_step_memory
from .speed_models import NUM_TARGET_LABELS, ModelSpec, build_models
from .stepping import SteppedTrainer, interleaved_step_times, step_time_summary, synchronize

TARGET_EMA_SHARE = 0.01
TARGET_TRAINER_OVERHEAD = 1.05


def ema_update_times(trainer, device: str, repeats: int, warmup: int = 5) -> list[float]:
    """Milliseconds of `repeats` EMA updates of `trainer`'s teacher towards its student, after `warmup` untimed ones."""
    student, times = unwrap_model(trainer.model), []
    for i in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        trainer.teacher.update(student)
        synchronize(device)
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    return times


def ema_tensor_count(teacher) -> int:
    """How many tensors one EMA update averages: the floating-point tensors of the teacher's backbone (its
    parameters, and its buffers with `include_buffers`)."""
    adapter, model = teacher.adapter, teacher.model
    tensors = dict(adapter.backbone_named_parameters(model))
    if teacher.include_buffers:
        tensors.update(adapter.backbone_named_buffers(model))
    return sum(t.is_floating_point() for t in tensors.values())


def random_batch(spec, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch of `spec`'s size of random images and labels, on `device`."""
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(spec.batch_size, 3, spec.image_size, spec.image_size, generator=g).to(device),
        "labels": torch.randint(0, NUM_TARGET_LABELS, (spec.batch_size,), generator=g).to(device),
    }


def teacher_forward_summary(steppers, names: list[str], batch, rounds: int, clock, warmup: int = 3) -> dict:
    """The teacher forward alone (on the batch, no mix) of each of `names` (SMILE and its teacher options),
    interleaved in rounds in a shuffled order: median ms [quartiles], and the ratio to plain SMILE's teacher forward
    of the same round."""
    rng, pixel_values = np.random.default_rng(1), batch["pixel_values"]
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        for i in rng.permutation(len(names)):
            teacher = steppers[names[i]].trainer.teacher
            start = clock()
            teacher(pixel_values)
            if r >= warmup:
                times[names[i]].append(clock() - start)
    base = np.array(times["smile"])
    return {
        name: {"ms": quantiles([1e3 * t for t in ts]), "ratio": quantiles(list(np.array(ts) / base))}
        for name, ts in times.items()
    }


def model_header(spec, student: nn.Module, rounds: int) -> dict:
    """The description of a benchmarked model that starts its results."""
    return {
        "description": spec.description,
        "image_size": spec.image_size,
        "batch_size": spec.batch_size,
        "parameters_m": sum(p.numel() for p in student.parameters()) / 1e6,
        "rounds": rounds,
    }


def benchmark_model(spec: ModelSpec, methods: list[str], opts) -> dict:
    rounds = opts.rounds or spec.rounds
    chunks = spec.chunks if opts.chunks is None else opts.chunks  # 0 skips the trainer-vs-bare section
    source, student = build_models(spec)
    batch = random_batch(spec, opts.device)
    result = model_header(spec, student, rounds)
    log(f"[{spec.name}] {spec.description}, batch {spec.batch_size}: building {len(methods)} trainers")
    variants = [f"smile[{v}]" for v in getattr(opts, "teacher_variants", [])] if "smile" in methods else []
    steppers = {m: SteppedTrainer(m, spec, source, student, batch, opts) for m in [*methods, *variants]}

    log(f"[{spec.name}] step times, {rounds} interleaved rounds")
    clock = time.thread_time if getattr(opts, "clock", "wall") == "thread" else time.perf_counter
    times = interleaved_step_times(steppers, rounds, warmup=3, clock=clock)
    result.update(step_time_summary(times, "finetune"))

    if variants:
        log(f"[{spec.name}] teacher forward of each teacher option")
        result["teacher_forward"] = teacher_forward_summary(steppers, ["smile", *variants], batch, rounds * 2, clock)

    if "smile" in steppers:
        log(f"[{spec.name}] EMA update")
        smile = steppers["smile"].trainer
        ema_times = ema_update_times(smile, opts.device, repeats=20)
        ema_ms = float(np.median(ema_times))
        smile_ms = result["step_ms"]["smile"]["median"]
        every = smile.args.ema_update_every
        result["ema"] = {
            "update_ms": quantiles(ema_times),
            "tensors": ema_tensor_count(smile.teacher),
            "update_every": every,
            "share_of_smile_step_amortised": ema_ms / every / smile_ms,
            "share_of_smile_step_if_every_step": ema_ms / smile_ms,
        }

    log(f"[{spec.name}] peak memory")
    result["memory"] = {m: peak_step_memory(steppers[m]) for m in steppers if m in opts.memory_methods}
    del steppers
    gc.collect()

    log(f"[{spec.name}] profile of the bare steps")
    profiled = list(dict.fromkeys([*methods, "smile"]))  # every method; the report's phase table reads smile's
    result["profile"] = step_profile(spec, source, student, batch, opts, max(6, rounds // 2), profiled)

    if chunks > 0:
        result["trainer_vs_bare"] = {}
        for method in ("smile", "finetune"):
            log(f"[{spec.name}] SmileTrainer.train() vs bare loop ({method}), {chunks} chunk pairs")
            result["trainer_vs_bare"][method] = trainer_vs_bare(
                spec, source, student, opts, chunks, method, chunk_steps=spec.chunk_steps
            )
    gc.collect()
    return result


def report(payload: dict) -> str:
    models = payload["models"]
    names = list(models)
    methods = payload["settings"]["methods"]
    lines = [
        "## Cost per optimizer step (speed benchmark)",
        "",
        device_line(payload) + ". Same model, batch and optimiser (reference recipe: SGD Nesterov) for every method.",
        "",
        "### Step time / fine-tuning step time",
        "",
        "Median [quartiles] over interleaved rounds (one step of every method per round, shuffled order; each ratio "
        "against fine-tuning's step of the same round). EMA updates (every 10 steps) are included in SMILE's steps."
        + (" Step times are the CPU time of the stepping thread (`--clock thread`: the load of other processes "
           "does not add to them; 1 torch thread, so every kernel runs on it)."
           if payload["settings"].get("clock") == "thread" else ""),
        *teacher_variant_note(payload),
        "",
    ]
    header = ["method"] + [f"{n} ({models[n]['image_size']}px, batch {models[n]['batch_size']})" for n in names]
    variants = [f"smile[{v}]" for v in payload["settings"].get("teacher_variants", [])]
    rows = [
        [m] + [fmt_q(models[n]["ratio"][m]) if m in models[n]["ratio"] else "n/a" for n in names]
        for m in [*methods, *variants]
    ]
    rows.append(["fine-tuning step (ms)"] + [f"{models[n]['step_ms']['finetune']['median']:.1f}" for n in names])
    lines += [markdown_table(header, rows), ""]
    lines += teacher_forward_table(models)

    lines += ["### SMILE against the targets", ""]
    header = ["", *names]
    rows = []
    smile = [models[n]["ratio"].get("smile") for n in names]
    if all(smile):
        rows.append(
            [f"SMILE step / fine-tuning step (target ≤ {TARGET_RATIO})"]
            + [f"{q['median']:.2f} [{q['p25']:.2f}–{q['p75']:.2f}] {'✓' if q['median'] <= TARGET_RATIO else '✗'}" for q in smile]
        )
    if all("ema" in models[n] for n in names):
        rows.append(["one EMA update (ms)"] + [fmt_q(models[n]["ema"]["update_ms"], 2) for n in names])
        rows.append(
            [f"EMA share of a SMILE step, amortised over 10 steps (target < {100 * TARGET_EMA_SHARE:.0f}%)"]
            + [
                f"{100 * models[n]['ema']['share_of_smile_step_amortised']:.2f}% "
                f"{'✓' if models[n]['ema']['share_of_smile_step_amortised'] < TARGET_EMA_SHARE else '✗'}"
                for n in names
            ]
        )
        rows.append(
            ["EMA share if updated every step"]
            + [f"{100 * models[n]['ema']['share_of_smile_step_if_every_step']:.2f}%" for n in names]
        )
    if all("trainer_vs_bare" in models[n] for n in names):
        rows.append(
            [f"SmileTrainer.train() / bare loop, SMILE (target < {TARGET_TRAINER_OVERHEAD})"]
            + [
                f"{fmt_q(models[n]['trainer_vs_bare']['smile']['ratio'], 3)} "
                f"{'✓' if models[n]['trainer_vs_bare']['smile']['ratio']['median'] < TARGET_TRAINER_OVERHEAD else '✗'}"
                for n in names
            ]
        )
        rows.append(
            ["same for fine-tuning (the stock Trainer's own overhead)"]
            + [fmt_q(models[n]["trainer_vs_bare"]["finetune"]["ratio"], 3) for n in names]
        )
        rows.append(
            ["bare-loop step, SMILE / fine-tuning (ms)"]
            + [
                f"{models[n]['trainer_vs_bare']['smile']['bare_step_ms']['median']:.1f} / "
                f"{models[n]['trainer_vs_bare']['finetune']['bare_step_ms']['median']:.1f}"
                for n in names
            ]
        )
    for m in ("finetune", "smile"):
        if all(m in models[n]["memory"] for n in names):
            rows.append(
                [f"peak memory, {m} (MiB): held + step peak"]
                + [
                    f"{models[n]['memory'][m]['peak_mib']:.1f} = {models[n]['memory'][m]['held_mib']:.1f} + "
                    f"{models[n]['memory'][m]['step_peak_mib']:.1f}"
                    for n in names
                ]
            )
    if all({"finetune", "smile"} <= set(models[n]["memory"]) for n in names):
        rows.append(
            ["peak memory, SMILE / fine-tuning"]
            + [f"{models[n]['memory']['smile']['peak_mib'] / models[n]['memory']['finetune']['peak_mib']:.2f}" for n in names]
        )
    lines += [markdown_table(header, rows), ""]

    lines += [
        "### Where the time goes (bare loops, median ms per phase; % of the fine-tuning step)",
        "",
    ]
    phases = ["data", "mixing", "student forward", "teacher forward", "loss terms", "backward", "optimizer", "total"]
    header = ["phase"] + [f"{n} {m}" for n in names for m in ("finetune", "smile")]
    rows = []
    for phase in phases:
        row = [phase]
        for n in names:
            ft_total = models[n]["profile"]["finetune"]["total"]
            for m in ("finetune", "smile"):
                value = models[n]["profile"][m].get(phase)
                row.append("–" if value is None else f"{1e3 * value:.1f} ({100 * value / ft_total:.0f}%)")
        rows.append(row)
    lines += [markdown_table(header, rows), ""]
    lines += bare_totals_table(models)
    return "\n".join(lines)


def teacher_forward_table(models: dict) -> list[str]:
    """The teacher forward alone of each teacher option, where measured."""
    names = [n for n in models if "teacher_forward" in models[n]]
    if not names:
        return []
    variants = list(dict.fromkeys(v for n in names for v in models[n]["teacher_forward"]))
    header = ["teacher"] + [f"{n}: ms" for n in names] + [f"{n}: / smile's" for n in names]
    rows = []
    for v in variants:
        cells = [models[n]["teacher_forward"].get(v) for n in names]
        rows.append(
            [v]
            + [fmt_q(c["ms"], 2) if c else "n/a" for c in cells]
            + [fmt_q(c["ratio"], 2) if c else "n/a" for c in cells]
        )
    title = ("The teacher forward alone (the same batch, unmixed), interleaved over the options in rounds: median "
             "[quartiles], and its ratio to plain SMILE's teacher forward of the same round.")  # fmt: skip
    return [title, "", markdown_table(header, rows), ""]


def teacher_variant_note(payload: dict) -> list[str]:
    """What the `smile[<variant>]` rows are, and the load of the machine while they were measured."""
    variants = payload["settings"].get("teacher_variants")
    if not variants:
        return []
    load = payload["settings"].get("load_average")
    return [
        "`smile[...]` rows: SMILE with a teacher option, in the same rounds: `fold` = `teacher_fold_batchnorm`, `cl` "
        "= `teacher_channels_last`, `compile` = the teacher alone compiled (`Teacher.compile_model`, inductor; its "
        "compilation is in the warm-up rounds), `bf16` = `teacher_bf16`."
        + (f" Load average (1, 5, 15 min) at the start: {load['start']}, at the end: {load['end']}." if load else ""),
    ]


def bare_totals_table(models: dict) -> list[str]:
    """Every profiled method's bare-loop step (median ms, and / fine-tuning's), where more than fine-tuning and
    SMILE were profiled."""
    names = list(models)
    methods = list(dict.fromkeys(m for n in names for m in models[n]["profile"]))
    if set(methods) <= {"finetune", "smile"}:
        return []
    header = ["method"] + names
    rows = []
    for m in methods:
        row = [m]
        for n in names:
            profile = models[n]["profile"]
            value = profile.get(m, {}).get("total")
            row.append("–" if value is None else f"{1e3 * value:.1f} ({value / profile['finetune']['total']:.2f})")
        rows.append(row)
    title = "### Bare-loop step of every method (standalone `TransferLoss`; median ms, / fine-tuning)"
    return [title, "", markdown_table(header, rows), ""]
