# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The bare loop: the same SMILE and fine-tuning steps as `SmileTrainer` without the Trainer, timed phase by phase
(where the time goes) and in chunks against `SmileTrainer.train()` (what the Trainer costs)."""

from __future__ import annotations

import contextlib
import copy
import time
import warnings

import numpy as np
import torch
import transformers
from torch import nn

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME, BackboneAdapter, build_source_head_copy
from smile_hf.loss import TransferLoss
from smile_hf.methods import METHODS as METHOD_CLASSES
from smile_hf.teacher import EmaTeacher

from .common import quantiles
from .speed_models import ModelSpec, random_dataset
from .stepping import synchronize, training_arguments


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
