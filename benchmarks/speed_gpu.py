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

import copy
import gc
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import transformers
from torch import nn

from smile_hf import SmileTrainer
from smile_hf.profiling import DispatchCounter

from . import speed
from .common import RESULTS_DIR, environment, markdown_table, quantiles, write_json, write_text

SOURCE_LABELS = 1000
TARGET_LABELS = 100
TARGET_SMILE_OVER_FT_PLUS_TEACHER = 1.05
TARGET_SMILE_OVER_FT = speed.TARGET_RATIO
TRAINER_MODES = ("stock-finetune", "smiletrainer-finetune", "smile")
MODES = (*TRAINER_MODES, "teacher-forward")
LAUNCH_EVENT = re.compile(r"^(cudaLaunch|cuLaunch|cudaGraphLaunch)")
"""CUDA runtime / driver calls that launch work on the GPU (`cudaLaunchKernel`, `cudaLaunchKernelExC`,
`cuLaunchKernel`, `cuLaunchKernelEx`, `cudaLaunchCooperativeKernel`, `cudaGraphLaunch`)."""
RUNTIME_SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuModelSpec:
    name: str
    description: str
    config: callable  # num_labels -> PretrainedConfig
    image_size: int
    batch_size: int


def _spec(name, description, config, image_size, batch_size) -> GpuModelSpec:
    return GpuModelSpec(name, description, config, image_size, batch_size)


def resnet50(n):
    return transformers.ResNetConfig(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck",
        num_labels=n,
    )  # fmt: skip


def vit_b16(n):
    return transformers.ViTConfig(
        image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, num_labels=n,
    )  # fmt: skip


def convnext_t(n):
    return transformers.ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=n)


def swin_t(n):
    return transformers.SwinConfig(
        image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        num_labels=n,
    )  # fmt: skip


GPU_MODELS = {
    "resnet50-b48": _spec("resnet50-b48", "ResNet-50 (microsoft/resnet-50's layout)", resnet50, 224, 48),
    "resnet50-b128": _spec("resnet50-b128", "ResNet-50 (microsoft/resnet-50's layout)", resnet50, 224, 128),
    "vit-b16": _spec("vit-b16", "ViT-B/16 (google/vit-base-patch16-224's shape)", vit_b16, 224, 64),
    "convnext-t": _spec("convnext-t", "ConvNeXt-T (facebook/convnext-tiny-224's shape)", convnext_t, 224, 64),
    "swin-t": _spec("swin-t", "Swin-T (microsoft/swin-tiny-patch4-window7-224's shape)", swin_t, 224, 64),
}
"""The preset: realistic models at 224 px."""

TINY_MODELS = {
    "resnet50-b48": _spec(
        "resnet50-b48", "tiny bottleneck ResNet (2 stages 16/32)",
        lambda n: transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", num_labels=n
        ), 32, 4,
    ),
    "resnet50-b128": _spec(
        "resnet50-b128", "tiny bottleneck ResNet (2 stages 16/32)",
        lambda n: transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", num_labels=n
        ), 32, 6,
    ),
    "vit-b16": _spec(
        "vit-b16", "tiny ViT (32 wide, 2 layers, patch 8)",
        lambda n: transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=n,
        ), 32, 4,
    ),
    "convnext-t": _spec(
        "convnext-t", "tiny ConvNeXt (2 stages 16/32)",
        lambda n: transformers.ConvNextConfig(num_stages=2, depths=[1, 1], hidden_sizes=[16, 32], num_labels=n),
        32, 4,
    ),
    "swin-t": _spec(
        "swin-t", "tiny Swin (16 wide, 2 stages, window 4)",
        lambda n: transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=n,
        ), 32, 4,
    ),
}  # fmt: skip
"""The same keys with tiny configs (`--tiny`): the same code path in a few seconds on the CPU."""


def build_models(spec: GpuModelSpec, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A randomly initialised source model (`SOURCE_LABELS` classes) and a student with the same backbone weights
    and a new head (`TARGET_LABELS` classes)."""
    torch.manual_seed(seed)
    source = transformers.AutoModelForImageClassification.from_config(spec.config(SOURCE_LABELS))
    student = transformers.AutoModelForImageClassification.from_config(spec.config(TARGET_LABELS))
    student.base_model.load_state_dict(source.base_model.state_dict())
    return source, student


def device_batch(spec: GpuModelSpec, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic images and labels, created on the device (no host-to-device copy in the step)."""
    g = torch.Generator(device=device).manual_seed(seed)
    size = (spec.batch_size, 3, spec.image_size, spec.image_size)
    return {
        "pixel_values": torch.randn(size, generator=g, device=device),
        "labels": torch.randint(0, TARGET_LABELS, (spec.batch_size,), generator=g, device=device),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Trainers stepped as `Trainer.train` steps them
# ---------------------------------------------------------------------------------------------------------------------


def stock_arguments(opts, batch_size: int) -> transformers.TrainingArguments:
    """The stock `TrainingArguments` of `speed.training_arguments` (the same optimiser and settings) without the
    SMILE fields."""
    return transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="smile-speed-gpu-"),
        max_steps=10**7,
        **speed.stock_step_settings(opts, batch_size),
    )


def build_trainer(mode: str, spec: GpuModelSpec, source: nn.Module, student: nn.Module, opts) -> transformers.Trainer:
    """The trainer of `mode`, on its own copies of the models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "stock-finetune":
            return transformers.Trainer(model=copy.deepcopy(student), args=stock_arguments(opts, spec.batch_size))
        method = {"smiletrainer-finetune": "finetune", "smile": "smile"}[mode]
        args = speed.training_arguments(method, opts, spec.batch_size, 10**7)
        images = torch.zeros(2, 3, spec.image_size, spec.image_size)
        return SmileTrainer(
            model=copy.deepcopy(student), args=args, teacher_model=copy.deepcopy(source),
            train_dataset=speed.TensorDataset(images, torch.zeros(2, dtype=torch.long)),
        )  # fmt: skip


class LoopStepper:
    """A `Trainer` advanced one optimizer step at a time by the body of `Trainer.train`'s inner loop (transformers
    5.x `_run_epoch`, one micro-batch per step, no clipping, no logging or saving): the count of labels that
    scales a loss computed by the model (`_get_num_items_in_batch`), `on_step_begin`, `training_step`, the nan/inf filter of the step's loss (`logging_nan_inf_filter`), `floating_point_ops`, the
    gradient norm computed for logging (`_get_grad_norm`, where the Trainer has it), `on_pre_optimizer_step`,
    `optimizer.step`, `on_optimizer_step`, `_get_learning_rate`, `lr_scheduler.step`, `model.zero_grad`,
    `on_step_end`. Set up as `Trainer.train` sets up: `accelerator.prepare(model, optimizer)` (bf16: the model's
    forward under accelerate's autocast), then the scheduler and `on_train_begin` (SmileTrainer: the method's
    `setup` first, as `SmileTrainer.train` does)."""

    def __init__(self, trainer: transformers.Trainer, batch: dict[str, torch.Tensor], device: str):
        self.trainer, self.batch, self.device = trainer, batch, device
        max_steps = trainer.args.max_steps
        if isinstance(trainer, SmileTrainer) and not trainer._method_ready:
            trainer.method.setup(trainer)
            trainer._method_ready = True
        trainer.create_optimizer()
        self.model, trainer.optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
        trainer.model_wrapped = self.model
        trainer.create_scheduler(num_training_steps=max_steps, optimizer=trainer.optimizer)
        trainer.state.max_steps = max_steps
        trainer.current_gradient_accumulation_steps = 1
        trainer._tr_loss = torch.tensor(0.0, device=trainer.args.device)
        trainer._globalstep_last_logged = trainer.state.global_step
        handler = trainer.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = trainer.model, trainer.optimizer, trainer.lr_scheduler
        self.model.zero_grad()
        trainer.control = handler.on_train_begin(trainer.args, trainer.state, trainer.control)
        trainer.control = handler.on_epoch_begin(trainer.args, trainer.state, trainer.control)

    def step(self) -> None:
        tr, model, inputs = self.trainer, self.model, self.batch
        args, state, handler = tr.args, tr.state, tr.callback_handler
        tr.accelerator.gradient_state._set_sync_gradients(True)
        num_items = tr._get_num_items_in_batch([inputs], args.device) if hasattr(tr, "_get_num_items_in_batch") else None
        tr.control = handler.on_step_begin(args, state, tr.control)
        loss = tr.training_step(model, inputs, num_items)
        if args.logging_nan_inf_filter and (torch.isnan(loss) or torch.isinf(loss)):
            tr._tr_loss += tr._tr_loss / (1 + state.global_step - tr._globalstep_last_logged)
        else:
            tr._tr_loss += loss
        tr.current_flos += float(tr.floating_point_ops(inputs))
        grad_norm = None
        if args.max_grad_norm is not None and args.max_grad_norm > 0:
            grad_norm = tr.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        if hasattr(tr, "_get_grad_norm"):  # transformers >= 5: the norm is computed for the logs even without clipping
            tr._get_grad_norm(model, grad_norm=grad_norm)
        tr.control = handler.on_pre_optimizer_step(args, state, tr.control)
        tr.optimizer.step()
        tr.control = handler.on_optimizer_step(args, state, tr.control)
        tr._get_learning_rate()
        if not tr.accelerator.optimizer_step_was_skipped:
            tr.lr_scheduler.step()
        model.zero_grad()
        state.global_step += 1
        tr.control = handler.on_step_end(args, state, tr.control)

    def next_step_updates_ema(self) -> bool:
        teacher = getattr(self.trainer, "teacher", None)
        return teacher is not None and teacher.should_update(self.trainer.state.global_step + 1)

    def static_storages(self) -> list[torch.Tensor]:
        """Tensors held between steps: the model's (auxiliary head included), the teacher's, the optimizer state and
        the method's state."""
        tr = self.trainer
        tensors = list(tr.model.parameters()) + list(tr.model.buffers())
        teacher = getattr(tr, "teacher", None)
        if teacher is not None:
            tensors += (
                list(teacher.model.parameters()) + list(teacher.model.buffers()) + list(teacher.state_dict().values())
            )
        for state in tr.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        if hasattr(tr, "method"):
            tensors += list(tr.method.state_dict().values())
        return tensors


class TeacherForward:
    """One forward of a SMILE trainer's teacher on the batch, as its `compute_loss` runs it."""

    def __init__(self, smile: LoopStepper):
        self.loss_fn, self.device = smile.trainer.loss_fn, smile.device
        self.pixel_values = smile.batch["pixel_values"]
        self.mix = self.loss_fn.draw_mix(self.pixel_values, smile.model, 0)

    def step(self) -> None:
        self.loss_fn.teacher_forward(self.pixel_values, self.mix)


# ---------------------------------------------------------------------------------------------------------------------
# Counting: host syncs, operators, kernel launches; peak memory
# ---------------------------------------------------------------------------------------------------------------------


def dispatch_counts(stepper) -> dict:
    """Host syncs (by operator), dispatched operators and cross-device copies of one `stepper.step()`."""
    with DispatchCounter() as counter:
        stepper.step()
    syncs = dict(sorted(counter.host_syncs.items()))
    return {
        "host_syncs": syncs,
        "host_syncs_total": int(sum(syncs.values())),
        "dispatched_ops": int(counter.total),
        "cross_device_copies": int(counter.cross_device_copies),
    }


def ordinary_step_counts(stepper: LoopStepper) -> dict:
    """`dispatch_counts` of a step without an EMA update."""
    if stepper.next_step_updates_ema():
        stepper.step()
    return dispatch_counts(stepper)


def ema_step_counts(stepper: LoopStepper) -> dict | None:
    """`dispatch_counts` of a step with an EMA update (None without an EMA teacher)."""
    if getattr(stepper.trainer, "teacher", None) is None or stepper.trainer.teacher.decay >= 1.0:
        return None
    while not stepper.next_step_updates_ema():
        stepper.step()
    return dispatch_counts(stepper)


def sync_debug_warnings(stepper) -> int:
    """CUDA only: the warnings `torch.cuda.set_sync_debug_mode("warn")` issues over one step (the mode restored)."""
    speed.synchronize(stepper.device)
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            stepper.step()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    speed.synchronize(stepper.device)
    return sum("synchroniz" in str(w.message) for w in caught)


def profiled_launches(stepper) -> dict:
    """CUDA only: the kernel launches (`cudaLaunchKernel`-like runtime calls), the kernels that ran on the GPU and
    the runtime's synchronising calls that `torch.profiler` records over one step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    speed.synchronize(stepper.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        stepper.step()
    events = prof.key_averages()
    launches = {e.key: int(e.count) for e in events if LAUNCH_EVENT.match(e.key)}
    runtime_syncs = {e.key: int(e.count) for e in events if e.key in RUNTIME_SYNC_EVENTS}
    gpu = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = sum(int(e.count) for e in gpu if not e.key.startswith(("Memcpy", "Memset")))
    return {
        "launches": dict(sorted(launches.items())),
        "launches_total": int(sum(launches.values())),
        "gpu_kernels": kernels,
        "runtime_sync_calls": dict(sorted(runtime_syncs.items())),
    }


def step_memory(build, device: str) -> tuple[LoopStepper, dict[str, float]]:
    """Build a stepper with `build()` and measure the peak memory of one step (after one warm-up step). CUDA: the
    allocator's peak above what was allocated before `build()` (so the other steppers alive are not counted);
    CPU: `speed.peak_step_memory` (held tensors + a dispatch-mode tracker of the step's allocations)."""
    if not device.startswith("cuda"):
        stepper = build()
        return stepper, speed.peak_step_memory(stepper)
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    stepper = build()
    stepper.step()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated() - baseline
    stepper.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline
    return stepper, {"held_mib": held / 2**20, "step_peak_mib": (peak - held) / 2**20, "peak_mib": peak / 2**20}


# ---------------------------------------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------------------------------------


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
    speed.log(f"[{spec.name}] {spec.description}, {spec.image_size}px, batch {spec.batch_size}: building")
    steppers, result["memory"] = build_steppers(spec, opts)
    smile = steppers["smile"].trainer
    result["parameters_m"] = sum(p.numel() for p in steppers["stock-finetune"].trainer.model.parameters()) / 1e6
    result["ema_update_every"] = smile.args.ema_update_every

    speed.log(f"[{spec.name}] step times, {opts.rounds} interleaved rounds")
    times = speed.interleaved_step_times(steppers, opts.rounds, warmup=opts.warmup)
    result["times_ms"] = {m: [1e3 * t for t in ts] for m, ts in times.items()}
    result["step_ms"] = {m: quantiles(ts) for m, ts in result["times_ms"].items()}
    result["ratio"] = {name: quantiles(values) for name, values in round_ratios(times).items()}

    speed.log(f"[{spec.name}] host syncs and operators per step")
    counts = {m: {"step": ordinary_step_counts(steppers[m])} for m in TRAINER_MODES}
    counts["smile"]["ema_step"] = ema_step_counts(steppers["smile"])
    counts["teacher-forward"] = {"step": dispatch_counts(steppers["teacher-forward"])}
    result["counts"] = counts
    if cuda:
        speed.log(f"[{spec.name}] sync debug mode and profiled kernel launches")
        result["sync_debug_warnings"] = {m: sync_debug_warnings(steppers[m]) for m in MODES}
        result["cuda_profile"] = {m: profiled_launches(steppers[m]) for m in MODES}
    del steppers, smile
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


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
        speed.device_line(payload, versions) + ". Random weights from configs; SGD Nesterov momentum 0.9, no "
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
            text = speed.fmt_q(q, 3)
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


# ---------------------------------------------------------------------------------------------------------------------
# Entry point (called by `speed.main`)
# ---------------------------------------------------------------------------------------------------------------------


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
