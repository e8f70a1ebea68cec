# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The report of the GPU speed preset: ratios to the stock Trainer, host syncs, launches and memory per model, and
whether the targets are met."""

from __future__ import annotations

from .common import TARGET_RATIO, device_line, fmt_q, markdown_table
from .gpu_steppers import MODES, TRAINER_MODES

TARGET_SMILE_OVER_FT_PLUS_TEACHER = 1.05
TARGET_SMILE_OVER_FT = TARGET_RATIO


def syncs_text(counts: dict | None) -> str:
    if counts is None:
        return "–"
    names = ", ".join(f"{name.removeprefix('aten::')}×{n}" for name, n in counts["host_syncs"].items())
    return f"{counts['host_syncs_total']}" + (f" ({names})" if names else "")


def targets_met(payload: dict) -> dict[str, bool]:
    """Per model: whether the median of (b) is within its target."""
    return {
        name: model["ratio"]["smile / (stock-finetune + teacher-forward)"]["median"]
        <= TARGET_SMILE_OVER_FT_PLUS_TEACHER
        for name, model in payload["models"].items()
    }


def report(payload: dict) -> str:
    models, settings, env = payload["models"], payload["settings"], payload["environment"]
    names = list(models)
    cuda = settings["device"].startswith("cuda")
    met = targets_met(payload)
    missed = [n for n, ok in met.items() if not ok]
    versions = f", accelerate {env.get('accelerate')}, smile_hf {env.get('smile_hf')}"
    if cuda:
        versions += f", CUDA {env.get('cuda_version')}, cuDNN {env.get('cudnn')}"
    lines = [
        "## Cost per optimizer step on realistic models (speed benchmark, GPU preset"
        + (", tiny configs)" if settings["tiny"] else ")"),
        "",
        device_line(payload, versions) + ". Random weights from configs; SGD Nesterov momentum 0.9, no "
        "gradient clipping; one synthetic batch resident on the device.",
        "",
        f"**Target (b) ≤ {TARGET_SMILE_OVER_FT_PLUS_TEACHER}: "
        + (f"not met on {', '.join(missed)}" if missed else "met on every model")
        + ".**"
        + (" (Tiny configs: these numbers only show that the code runs.)" if settings["tiny"] else ""),
        "",
        "Each trainer is stepped as `Trainer.train` steps it (step callbacks, `training_step`, the loss's nan/inf "
        "filter, the gradient norm computed for the logs, `optimizer.step`, scheduler, `zero_grad`). Ratios: median "
        "[quartiles] over interleaved rounds (one call of each per round, shuffled), each from the times of its "
        "round. `stock-finetune` is a stock `transformers.Trainer`; `teacher-forward` is the SMILE trainer's "
        "teacher on the batch as `compute_loss` runs it (no autograd state, same autocast).",
        "",
    ]
    header = [""] + [
        f"{n} ({models[n]['parameters_m']:.3g}M params, {models[n]['image_size']}px, batch {models[n]['batch_size']})"
        for n in names
    ]
    rows = []

    def row(label, cell):
        rows.append([label] + [cell(models[n], n) for n in names])

    def ratio(key, target=None):
        def cell(m, n):
            q = m["ratio"][key]
            text = fmt_q(q, 3)
            return text if target is None else f"**{text}** {'✓' if q['median'] <= target else '✗'}"

        return cell

    def per_mode(fn, modes=("stock-finetune", "smile", "teacher-forward")):
        return lambda m, n: " / ".join(str(fn(m, mode)) for mode in modes)

    row(f"**(a) SMILE / stock FT** (≤ {TARGET_SMILE_OVER_FT})", ratio("smile / stock-finetune", TARGET_SMILE_OVER_FT))
    row(
        f"**(b) SMILE / (stock FT + teacher forward)** (≤ {TARGET_SMILE_OVER_FT_PLUS_TEACHER})",
        ratio("smile / (stock-finetune + teacher-forward)", TARGET_SMILE_OVER_FT_PLUS_TEACHER),
    )
    row("SmileTrainer FT / stock FT", ratio("smiletrainer-finetune / stock-finetune"))
    row("teacher forward / stock FT", ratio("teacher-forward / stock-finetune"))
    for mode in MODES:
        row(f"{mode} (ms, median)", lambda m, n, mode=mode: f"{m['step_ms'][mode]['median']:.2f}")
    for mode in TRAINER_MODES:
        row(f"(c) host syncs per step, {mode}", lambda m, n, mode=mode: syncs_text(m["counts"][mode]["step"]))
    row("(c) host syncs, SMILE step with EMA update", lambda m, n: syncs_text(m["counts"]["smile"]["ema_step"]))
    if cuda:
        row(
            "(c) sync-debug warnings per step, stock FT / SMILE / teacher fwd",
            per_mode(lambda m, mode: m["sync_debug_warnings"][mode]),
        )
        row(
            "(d) kernel launches per step (profiler), stock FT / SMILE / teacher fwd",
            per_mode(lambda m, mode: m["cuda_profile"][mode]["launches_total"]),
        )
    row(
        "(d) dispatched aten ops per step"
        + ("" if cuda else " (proxy for kernel launches)")
        + ", stock FT / SMILE / teacher fwd",
        per_mode(lambda m, mode: m["counts"][mode]["step"]["dispatched_ops"]),
    )
    row(
        "cross-device copies per step, stock FT / SMILE",
        per_mode(lambda m, mode: m["counts"][mode]["step"]["cross_device_copies"], ("stock-finetune", "smile")),
    )
    for mode in ("stock-finetune", "smile"):
        row(
            f"(e) peak memory, {mode} (MiB): held + step peak",
            lambda m, n, mode=mode: "{peak_mib:.1f} = {held_mib:.1f} + {step_peak_mib:.1f}".format(**m["memory"][mode]),
        )
    row(
        "(e) peak memory, SMILE / stock FT",
        lambda m, n: f"{m['memory']['smile']['peak_mib'] / m['memory']['stock-finetune']['peak_mib']:.2f}",
    )
    lines += [markdown_table(header, rows), ""]
    memory = (
        "the CUDA allocator's peak over one step, above what was allocated before the trainer was built"
        if cuda
        else "what is held between steps plus the peak of the tensors allocated during the step (a dispatch-mode tracker)"
    )
    lines += [
        "Host syncs: operators that make the host wait for the device (`smile_hf.profiling.HOST_SYNC_OPS`), counted "
        f"by `DispatchCounter` around one whole step. Peak memory: {memory}. Models: "
        + "; ".join(f"{n}: {models[n]['description']}" for n in names)
        + ".",
        "",
        f"Command: `{settings['command']}` ({settings.get('wall_seconds', '?')} s).",
        "",
    ]
    return "\n".join(lines)
