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
2. **Where the time goes** (a profile): the same steps written as a bare PyTorch loop with the library's pieces
   (`BackboneAdapter`, `EmaTeacher`, mixing, the SMILE loss terms), timed phase by phase.
3. **The EMA update**: the time of one `EmaTeacher.update` (one fused `torch._foreach_lerp_`), and its share of a
   SMILE step, amortised over `ema_update_every` steps and per step.
4. **Peak memory** of one step of each method: on CUDA the allocator's peak; on the CPU the parameters, buffers and
   optimizer state held between steps (student, auxiliary head, teacher) plus the peak of the tensors allocated
   during the step (tracked by a dispatch mode).
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
import contextlib
import copy
import gc
import json
import os
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import transformers
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME, BackboneAdapter, build_source_head_copy, unwrap_model
from smile_hf.loss import TransferLoss
from smile_hf.methods import METHODS as METHOD_CLASSES
from smile_hf.teacher import EmaTeacher

from .common import (
    METHODS,
    RESULTS_DIR,
    SOURCE_CHECKPOINT,
    available_methods,
    environment,
    markdown_table,
    quantiles,
    write_json,
    write_text,
)

TARGET_RATIO = 1.35
TARGET_EMA_SHARE = 0.01
TARGET_TRAINER_OVERHEAD = 1.05
NUM_SOURCE_LABELS = 10
NUM_TARGET_LABELS = 10


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def small_cnn_config(num_labels: int) -> transformers.PretrainedConfig:
    """The architecture of the bundled source checkpoint (a 3-stage basic-block ResNet, ~80k parameters)."""
    if os.path.isfile(os.path.join(SOURCE_CHECKPOINT, "config.json")):
        config = transformers.AutoConfig.from_pretrained(SOURCE_CHECKPOINT)
        config.num_labels = num_labels
        config.id2label = {i: str(i) for i in range(num_labels)}
        config.label2id = {str(i): i for i in range(num_labels)}
        return config
    return transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic", num_labels=num_labels
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    config: callable
    image_size: int
    batch_size: int
    rounds: int  # interleaved rounds of the step-time comparison (after warm-up)
    chunks: int  # chunk pairs of the trainer-vs-bare-loop comparison
    chunk_steps: int  # measured steps per chunk (a multiple of the EMA period, 10)


MODELS = {
    "small-cnn": ModelSpec(
        "small-cnn", "ResNet, 3 basic stages 16/32/64 (the bundled checkpoint's architecture), 32x32", small_cnn_config,
        32, 32, 40, 10, 20,
    ),
    "resnet50": ModelSpec(
        "resnet50", "ResNet-50 (microsoft/resnet-50's config, random weights), 64x64",
        lambda n: transformers.ResNetConfig(num_labels=n), 64, 8, 10, 2, 10,
    ),
    "vit": ModelSpec(
        "vit", "ViT-Ti/16 (192 wide, 12 layers, 3 heads; DeiT-Tiny's shape, random weights), 112x112",
        lambda n: transformers.ViTConfig(
            image_size=112, patch_size=16, hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
            intermediate_size=768, num_labels=n,
        ),
        112, 8, 16, 3, 20,
    ),
}  # fmt: skip


def build_models(spec: ModelSpec, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A randomly initialised source model (with a source head) and a student with the same backbone and a new head."""
    torch.manual_seed(seed)
    source = transformers.AutoModelForImageClassification.from_config(spec.config(NUM_SOURCE_LABELS))
    student = transformers.AutoModelForImageClassification.from_config(spec.config(NUM_TARGET_LABELS))
    student.base_model.load_state_dict(source.base_model.state_dict())
    return source, student


class TensorDataset(torch.utils.data.Dataset):
    """In-memory images and labels as the dicts the Trainer's default collator stacks."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor):
        self.pixel_values, self.labels = pixel_values, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[i], "labels": self.labels[i]}


def random_dataset(spec: ModelSpec, num: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(num, 3, spec.image_size, spec.image_size, generator=g)
    return TensorDataset(pixel_values, torch.randint(0, NUM_TARGET_LABELS, (num,), generator=g))


# ---------------------------------------------------------------------------------------------------------------------
# Trainers stepped one optimizer step at a time
# ---------------------------------------------------------------------------------------------------------------------


def stock_step_settings(opts, batch_size: int) -> dict:
    """The `TrainingArguments` values every benchmarked trainer shares: the SMILE reference recipe's optimiser (SGD,
    Nesterov momentum 0.9, lr 0.01, weight decay 1e-4, no clipping, constant lr), no logging or saving, the batch on
    the main process."""
    return dict(
        optim="sgd",
        optim_args="momentum=0.9,nesterov=True",
        learning_rate=0.01,
        weight_decay=1e-4,
        max_grad_norm=0.0,
        lr_scheduler_type="constant",
        per_device_train_batch_size=batch_size,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=opts.device == "cpu",
        bf16=opts.bf16,
        seed=0,
        dataloader_num_workers=0,
    )


def training_arguments(method: str, opts, batch_size: int, max_steps: int, **overrides) -> SmileTrainingArguments:
    """The same optimiser and settings for every method ([`stock_step_settings`]), set field by field:
    `reference_recipe=True` would also replace a batch size of 8 (the `TrainingArguments` default) by 48. No final
    plain phase (SMILE's mixing phase is what costs)."""
    kwargs = dict(
        output_dir=tempfile.mkdtemp(prefix="smile-speed-"),
        method=method,
        max_steps=max_steps,
        final_finetune_fraction=0.0,
        delta_attention=False,  # a one-off cost before training, not a per-step one
        **stock_step_settings(opts, batch_size),
    )
    kwargs.update(overrides)
    return SmileTrainingArguments(**kwargs)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class SteppedTrainer:
    """A `SmileTrainer` advanced one optimizer step at a time, with the work `Trainer.train` does per step."""

    def __init__(self, method: str, spec: ModelSpec, source: nn.Module, student: nn.Module, batch, opts, peft_config=None):
        self.max_steps = 10**7
        args = training_arguments(method, opts, spec.batch_size, self.max_steps)
        dataset = random_dataset(spec, spec.batch_size * 2, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = SmileTrainer(
                model=copy.deepcopy(student), args=args, teacher_model=copy.deepcopy(source), train_dataset=dataset,
                peft_config=peft_config,
            )  # fmt: skip
        trainer.create_optimizer_and_scheduler(num_training_steps=self.max_steps)
        trainer.state.max_steps = self.max_steps
        trainer.current_gradient_accumulation_steps = 1
        trainer.method.setup(trainer)
        trainer._method_ready = True
        self.model = trainer.model
        if opts.bf16:  # what `Trainer.train` does: accelerate wraps the student's forward in its autocast
            self.model = trainer.accelerator.prepare_model(trainer.model)
        handler = trainer.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = trainer.model, trainer.optimizer, trainer.lr_scheduler
        trainer.control = handler.on_train_begin(args, trainer.state, trainer.control)  # Co-Tuning's R, RIFLE's plan
        self.trainer, self.batch, self.method, self.device = trainer, batch, method, opts.device

    def step(self) -> None:
        tr = self.trainer
        tr.training_step(self.model, self.batch)
        tr.optimizer.step()
        tr.lr_scheduler.step()
        tr.optimizer.zero_grad(set_to_none=True)
        tr.state.global_step += 1
        tr.control = tr.callback_handler.on_step_end(tr.args, tr.state, tr.control)

    def static_storages(self) -> list[torch.Tensor]:
        """Tensors held between steps: the student's (aux head included), the teacher's, the optimizer state and
        the method's state (e.g. L2-SP's starting point)."""
        tensors = list(self.trainer.model.parameters()) + list(self.trainer.model.buffers())
        tensors += self.teacher_storages()
        for state in self.trainer.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        tensors += list(self.trainer.method.state_dict().values())
        return tensors

    def teacher_storages(self) -> list[torch.Tensor]:
        """The teacher's tensors: its model's parameters and buffers, and its state (for a LoRA teacher, which shares
        the student's base: its adapter in the shared model, its source head and its copy of the base's buffers)."""
        teacher = self.trainer.teacher
        if teacher is None:
            return []
        return list(teacher.model.parameters()) + list(teacher.model.buffers()) + list(teacher.state_dict().values())


def interleaved_step_times(steppers: dict[str, SteppedTrainer], rounds: int, warmup: int, seed: int = 0):
    """Per round, one step of each method in a shuffled order; returns {method: [seconds per round]}."""
    rng = np.random.default_rng(seed)
    names = list(steppers)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            synchronize(steppers[name].device)
            start = time.perf_counter()
            steppers[name].step()
            synchronize(steppers[name].device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------------------------------------------------


class PeakTensorMemory(TorchDispatchMode):
    """Tracks the bytes of the tensor storages created while active (outputs of every op, forward and backward),
    and their peak. A storage counts from its creation until it is freed. An output that shares the storage of one
    of the op's inputs (a view such as the `t()` of a weight in `linear`, or an in-place op such as the optimizer's
    `add_` on a parameter) allocates nothing and is not counted: counting it would add the parameters (and momentum
    buffers) the step touches to its peak, although they are already in the memory held between steps."""

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = (storage.data_ptr(), id(storage))
                if storage.data_ptr() == 0 or storage.data_ptr() in inputs or key in self.live:
                    continue
                self.live[key] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
        return out


def storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def peak_step_memory(stepper: SteppedTrainer) -> dict[str, float]:
    """Peak memory (MiB) of one optimizer step, after one warm-up step (so the optimizer state exists)."""
    stepper.step()
    gc.collect()
    if stepper.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        stepper.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"held_mib": before / 2**20, "step_peak_mib": (peak - before) / 2**20, "peak_mib": peak / 2**20}
    held = storage_bytes(stepper.static_storages())
    with PeakTensorMemory() as tracker:
        stepper.step()
    return {"held_mib": held / 2**20, "step_peak_mib": tracker.peak / 2**20, "peak_mib": (held + tracker.peak) / 2**20}


# ---------------------------------------------------------------------------------------------------------------------
# The bare loop: the same steps without the Trainer
# ---------------------------------------------------------------------------------------------------------------------


class BareLoop:
    """Fine-tuning or SMILE written as a plain PyTorch loop around the library's loss of one micro-batch
    (`TransferLoss`, the object `SmileTrainer.compute_loss` calls), without a Trainer."""

    def __init__(self, method: str, source: nn.Module, student: nn.Module, opts, args: SmileTrainingArguments):
        assert method in ("finetune", "smile")
        self.args, self.device, self.bf16 = args, opts.device, opts.bf16
        self.model = copy.deepcopy(student).to(opts.device).train()
        adapter = BackboneAdapter(self.model)
        self.teacher = None
        if method == "smile":
            self.model.add_module(SOURCE_HEAD_NAME, build_source_head_copy(adapter, source).to(opts.device))
            self.teacher = EmaTeacher(
                copy.deepcopy(source), adapter, args.ema_decay, args.ema_update_every, autocast=self.autocast
            ).to(opts.device)
        # `args` are SMILE's for both loops: building a second TrainingArguments here would reset the accelerator
        # state of the trainers the benchmark built before this loop.
        regularizer = METHOD_CLASSES[method](args)
        mixing = regularizer.default_mixing
        self.loss_fn = TransferLoss(regularizer, adapter, self.teacher, mixing=mixing, alpha=args.mixup_alpha, seed=args.seed)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=args.learning_rate, momentum=0.9, nesterov=True, weight_decay=args.weight_decay
        )
        self.step_index = 0

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)

    def step(self, batch, timer=None) -> None:
        """One optimizer step; `timer(name)` (if given) is called at the end of each phase."""
        mark = timer or (lambda name: None)
        loss_fn = self.loss_fn
        pixel_values = batch["pixel_values"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        mark("data")
        mix = loss_fn.draw_mix(pixel_values, self.model, self.step_index)
        if mix is not None:
            mark("mixing")
        with self.autocast():
            student = loss_fn.student_forward(self.model, pixel_values, mix)
        mark("student forward")
        teacher = None
        if self.teacher is not None:
            teacher = loss_fn.teacher_forward(pixel_values, mix)
            mark("teacher forward")
        loss = loss_fn.combine(self.model, pixel_values, labels, mix, student, teacher).loss
        mark("loss terms")
        loss.backward()
        mark("backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mark("optimizer")
        self.step_index += 1
        if self.teacher is not None and self.teacher.should_update(self.step_index):
            self.teacher.update(self.model)
            mark("ema update")


class PhaseTimer:
    def __init__(self, device: str):
        self.device = device
        self.phases: dict[str, float] = {}
        synchronize(device)
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


def step_profile(spec: ModelSpec, source, student, batch, opts, rounds: int) -> dict:
    """Median time of each phase of a fine-tuning step and of a SMILE step (bare loops, interleaved)."""
    args = training_arguments("smile", opts, spec.batch_size, 10**7)
    loops = {m: BareLoop(m, source, student, opts, args) for m in ("finetune", "smile")}
    records = {m: [] for m in loops}
    for r in range(rounds + 2):
        for name in (("finetune", "smile") if r % 2 == 0 else ("smile", "finetune")):
            timer = PhaseTimer(opts.device)
            loops[name].step(batch, timer)
            if r >= 2:
                records[name].append(timer.phases)
    profile = {}
    for name, rows in records.items():
        phases = [p for p in rows[0] if p != "ema update"]
        profile[name] = {p: float(np.median([row.get(p, 0.0) for row in rows])) for p in phases}
        profile[name]["total"] = float(np.median([sum(v for k, v in row.items() if k != "ema update") for row in rows]))
    return profile


def trainer_vs_bare(
    spec: ModelSpec, source, student, opts, chunks: int, method: str = "smile", chunk_steps: int = 20, skip: int = 2
) -> dict:
    """Mean step time of `SmileTrainer.train()` over that of a bare loop doing the same step (`method`: "smile" or
    "finetune"), on the same data, alternating chunks of `chunk_steps` measured steps. With "finetune" the ratio is
    the stock `Trainer`'s own overhead, which SMILE's ratio includes."""
    num_steps = chunk_steps + skip
    dataset = random_dataset(spec, num_steps * spec.batch_size, seed=2)
    stamps: list[float] = []

    class Stamp(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize(opts.device)
            stamps.append(time.perf_counter())

    args = training_arguments(
        method, opts, spec.batch_size, num_steps, logging_strategy="steps", logging_steps=10,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SmileTrainer(
            model=copy.deepcopy(student), args=args, teacher_model=copy.deepcopy(source), train_dataset=dataset,
            callbacks=[Stamp()],
        )  # fmt: skip
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    bare = BareLoop(method, source, student, opts, args)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=spec.batch_size, shuffle=True, collate_fn=transformers.default_data_collator,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip

    def run_trainer() -> list[float]:
        stamps.clear()
        trainer.train()
        return list(np.diff(stamps)[skip - 1 :])

    def run_bare() -> list[float]:
        bare.step_index = 0
        ends = []
        for batch in loader:
            bare.step(batch)
            synchronize(opts.device)
            ends.append(time.perf_counter())
        return list(np.diff(ends)[skip - 1 :])

    ratios, trainer_ms, bare_ms = [], [], []
    run_trainer(), run_bare()  # warm-up
    for c in range(chunks):
        order = (run_trainer, run_bare) if c % 2 == 0 else (run_bare, run_trainer)
        results = {fn.__name__: fn() for fn in order}
        t, b = float(np.mean(results["run_trainer"])), float(np.mean(results["run_bare"]))
        ratios.append(t / b)
        trainer_ms.append(1e3 * t)
        bare_ms.append(1e3 * b)
    return {
        "ratio": quantiles(ratios),
        "trainer_step_ms": quantiles(trainer_ms),
        "bare_step_ms": quantiles(bare_ms),
        "steps_per_chunk": chunk_steps,
        "chunks": chunks,
        "logging_steps": 10,
    }


# ---------------------------------------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------------------------------------


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


def random_batch(spec, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch of `spec`'s size of random images and labels, on `device`."""
    g = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(spec.batch_size, 3, spec.image_size, spec.image_size, generator=g).to(device),
        "labels": torch.randint(0, NUM_TARGET_LABELS, (spec.batch_size,), generator=g).to(device),
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
    chunks = opts.chunks or spec.chunks
    source, student = build_models(spec)
    batch = random_batch(spec, opts.device)
    result = model_header(spec, student, rounds)
    log(f"[{spec.name}] {spec.description}, batch {spec.batch_size}: building {len(methods)} trainers")
    steppers = {m: SteppedTrainer(m, spec, source, student, batch, opts) for m in methods}

    log(f"[{spec.name}] step times, {rounds} interleaved rounds")
    times = interleaved_step_times(steppers, rounds, warmup=3)
    base = times["finetune"]
    result["step_ms"] = {m: quantiles([1e3 * t for t in ts]) for m, ts in times.items()}
    result["ratio"] = {m: quantiles([t / b for t, b in zip(ts, base)]) for m, ts in times.items()}
    result["ratio_of_means"] = {m: float(np.mean(ts) / np.mean(base)) for m, ts in times.items()}

    if "smile" in steppers:
        log(f"[{spec.name}] EMA update")
        smile = steppers["smile"].trainer
        ema_times = ema_update_times(smile, opts.device, repeats=20)
        ema_ms = float(np.median(ema_times))
        smile_ms = result["step_ms"]["smile"]["median"]
        every = smile.args.ema_update_every
        result["ema"] = {
            "update_ms": quantiles(ema_times),
            "tensors": len(smile.teacher._pairs(unwrap_model(smile.model))[0]),
            "update_every": every,
            "share_of_smile_step_amortised": ema_ms / every / smile_ms,
            "share_of_smile_step_if_every_step": ema_ms / smile_ms,
        }

    log(f"[{spec.name}] peak memory")
    result["memory"] = {m: peak_step_memory(steppers[m]) for m in methods if m in opts.memory_methods}
    del steppers
    gc.collect()

    log(f"[{spec.name}] profile of the bare steps")
    result["profile"] = step_profile(spec, source, student, batch, opts, max(6, rounds // 2))

    if chunks > 0:
        result["trainer_vs_bare"] = {}
        for method in ("smile", "finetune"):
            log(f"[{spec.name}] SmileTrainer.train() vs bare loop ({method}), {chunks} chunk pairs")
            result["trainer_vs_bare"][method] = trainer_vs_bare(
                spec, source, student, opts, chunks, method, chunk_steps=spec.chunk_steps
            )
    gc.collect()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# LoRA: what the shared-base teacher costs (`--lora`)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraModelSpec:
    name: str
    description: str
    config: callable
    image_size: int
    batch_size: int
    rounds: int  # interleaved rounds of the step-time comparison (after warm-up)
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
    base = times["lora-finetune"]
    result["step_ms"] = {m: quantiles([1e3 * t for t in ts]) for m, ts in times.items()}
    result["ratio"] = {m: quantiles([t / b for t, b in zip(ts, base)]) for m, ts in times.items()}
    result["ratio_of_means"] = {m: float(np.mean(ts) / np.mean(base)) for m, ts in times.items()}
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
        "`full-*` train every weight; the full SMILE teacher is a full copy of the model. Peak memory: "
        + (
            "the CUDA allocator's peak over one step."
            if payload["settings"]["device"].startswith("cuda")
            else "what is held between steps (parameters, buffers, optimizer state, teacher, method state) plus the "
            "peak of the tensors allocated during one step (a dispatch-mode tracker of live storages)."
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


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def device_line(payload: dict, versions: str = "") -> str:
    """`Device: ...; torch ..., transformers ...<versions>; precision: ...` of a report."""
    env, settings = payload["environment"], payload["settings"]
    where = f" ({env['cuda']})" if env.get("cuda") else f", {env['torch_threads']} torch thread(s), {env['cpu_count']} cores"
    precision = "bf16 autocast" if settings["bf16"] else "fp32"
    return (
        f"Device: {settings['device']}{where}; torch {env['torch']}, transformers {env['transformers']}{versions}; "
        f"precision: {precision}"
    )


def fmt_q(q: dict, digits: int = 2) -> str:
    return f"{q['median']:.{digits}f} [{q['p25']:.{digits}f}–{q['p75']:.{digits}f}]"


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
        "against fine-tuning's step of the same round). EMA updates (every 10 steps) are included in SMILE's steps.",
        "",
    ]
    header = ["method"] + [f"{n} ({models[n]['image_size']}px, batch {models[n]['batch_size']})" for n in names]
    rows = [
        [m] + [fmt_q(models[n]["ratio"][m]) if m in models[n]["ratio"] else "n/a" for n in names] for m in methods
    ]
    rows.append(["fine-tuning step (ms)"] + [f"{models[n]['step_ms']['finetune']['median']:.1f}" for n in names])
    lines += [markdown_table(header, rows), ""]

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
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--lora", action="store_true", help="run only the LoRA section (SMILE-LoRA against "
                        "FT-LoRA and full training) -> results/lora.{json,md}")  # fmt: skip
    parser.add_argument("--models", default=None, help=f"comma-separated, from {', '.join(MODELS)} (default: all); "
                        f"with --lora from {', '.join(LORA_MODELS)} (default: all)")  # fmt: skip
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (finetune is always in)")
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
        print(text)
        if opts.markdown:
            write_text(opts.markdown, text)
        return payload
    if opts.device == "cpu":
        torch.set_num_threads(opts.threads)
    transformers.logging.set_verbosity_error()
    if opts.lora:
        payload = lora_main(opts, argv)
        text = lora_report(payload)
        print(text)
        if opts.output:
            write_json(opts.output, payload)
        if opts.markdown:
            write_text(opts.markdown, text)
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
    started = time.time()
    for name in opts.models.split(","):
        payload["models"][name] = benchmark_model(MODELS[name], methods, opts)
    payload["settings"]["wall_seconds"] = round(time.time() - started, 1)
    text = report(payload)
    print(text)
    if opts.output:
        write_json(opts.output, payload)
    if opts.markdown:
        write_text(opts.markdown, text)
    return payload


if __name__ == "__main__":
    main()
