# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The bare loop: the same steps as `SmileTrainer` without the Trainer, for every registered method (the standalone
`TransferLoss`, a `RegularizerContext` built by hand), timed phase by phase (where the time goes) and in chunks against
`SmileTrainer.train()` (what the Trainer costs)."""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import transformers
from torch import nn

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import BackboneAdapter, build_source_head_copy
from smile_hf.lora import build_teacher
from smile_hf.loss import LossOutput, TransferLoss
from smile_hf.methods import REGULARIZERS as METHOD_CLASSES
from smile_hf.methods import RegularizerContext, parse_method
from smile_hf.modeling import attach_source_head

from .common import quantiles
from .speed_models import ModelSpec, random_dataset
from .stepping import synchronize, training_arguments

PERIODIC_PHASES = ("ema update", "step hook")
"""Phases that do not run at every step in general (the EMA every `ema_update_every` steps, the regulariser's
`on_step_end`, e.g. RIFLE's re-initialisations): timed, but left out of a step's total."""


class BareLoop:
    """A method spec (`"smile"`, `"l2sp+mixup"`...) trained by a plain PyTorch loop around the library's loss of one
    micro-batch (`TransferLoss`, the object `SmileTrainer.compute_loss` calls), without a Trainer: the regulariser
    from `args` (`from_args`), the source head and the teacher where it needs them, its one-off `setup` and
    `prepare` on a `RegularizerContext` over `batches`, then per step the mix, the forward passes, the loss terms, SGD,
    the EMA update and `on_step_end`.

    `args` are the settings of every loop (the benchmark builds SMILE's once: building a second `TrainingArguments`
    would reset the accelerator state of the trainers it built before); only `method` chooses the method.
    """

    def __init__(
        self, method: str, source: nn.Module, student: nn.Module, opts, args: SmileTrainingArguments,
        batches: Callable[[], Iterable] | None = None,
    ):  # fmt: skip
        self.args, self.device, self.bf16 = args, opts.device, opts.bf16
        self.model = copy.deepcopy(student).to(opts.device).train()
        adapter = BackboneAdapter(self.model)
        name, mixing = parse_method(method)
        regulariser = METHOD_CLASSES[name].from_args(args)
        if regulariser.needs_source_head:
            attach_source_head(self.model, build_source_head_copy(adapter, source).to(opts.device))
        self.teacher = None
        if regulariser.needs_teacher:
            self.teacher = build_teacher(
                self.model, adapter, copy.deepcopy(source), decay=args.ema_decay if regulariser.ema_teacher else 1.0,
                update_every=args.ema_update_every, include_buffers=args.ema_buffers, autocast=self.autocast,
            ).to(opts.device)  # fmt: skip
        alpha = args.cutmix_alpha if mixing == "cutmix" else args.mixup_alpha
        self.loss_fn = TransferLoss(regulariser, adapter, self.teacher, mixing=mixing, alpha=alpha, seed=args.seed)
        self.method = regulariser.to(opts.device)
        self.context = RegularizerContext(
            self.model, adapter, batches or (lambda: []), opts.device, self.teacher, seed=args.seed, show_progress=False
        )
        self.method.setup(self.context)
        self.method.prepare(self.context)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=args.learning_rate, momentum=0.9, nesterov=True, weight_decay=args.weight_decay
        )
        self.max_steps = args.max_steps
        self.final_start = self.max_steps - round(self.max_steps * args.final_finetune_fraction)
        self.step_index = 0

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)

    def step(self, batch, timer=None) -> LossOutput:
        """One optimizer step; `timer(name)` (if given) is called at the end of each phase. Returns the step's loss
        and terms."""
        mark = timer or (lambda name: None)
        loss_fn, method = self.loss_fn, self.method
        pixel_values = batch["pixel_values"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        mark("data")
        final = method.has_final_phase and self.step_index >= self.final_start
        mix = None if final else loss_fn.draw_mix(pixel_values, self.model, self.step_index)
        if mix is not None:
            mark("mixing")
        with self.autocast():
            student = loss_fn.student_forward(self.model, pixel_values, mix)
        mark("student forward")
        teacher = None
        if self.teacher is not None and not final:
            teacher = loss_fn.teacher_forward(pixel_values, mix)
            mark("teacher forward")
        output = loss_fn.combine(self.model, pixel_values, labels, mix, student, teacher, final_phase=final)
        mark("loss terms")
        output.loss.backward()
        mark("backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mark("optimizer")
        self.step_index += 1
        teacher_follows = self.teacher is not None and method.ema_teacher and not final
        if teacher_follows and self.teacher.should_update(self.step_index):
            self.teacher.update(self.model)
            mark("ema update")
        method.on_step_end(self.context, self.step_index, self.max_steps)
        mark("step hook")
        return output


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


def step_profile(
    spec: ModelSpec, source, student, batch, opts, rounds: int, methods: Sequence[str] = ("finetune", "smile")
) -> dict:
    """Median time of each phase of a step of each method (bare loops on the same batch, interleaved: the order
    reversed every other round), and of its whole step ([`PERIODIC_PHASES`] left out)."""
    args = training_arguments("smile", opts, spec.batch_size, 10**7)
    loops = {m: BareLoop(m, source, student, opts, args, batches=lambda: [batch]) for m in methods}
    records = {m: [] for m in loops}
    for r in range(rounds + 2):
        for name in list(methods) if r % 2 == 0 else list(methods)[::-1]:
            timer = PhaseTimer(opts.device)
            loops[name].step(batch, timer)
            if r >= 2:
                records[name].append(timer.phases)
    profile = {}
    for name, rows in records.items():
        phases = [p for p in rows[0] if p not in PERIODIC_PHASES]
        profile[name] = {p: float(np.median([row.get(p, 0.0) for row in rows])) for p in phases}
        profile[name]["total"] = float(
            np.median([sum(v for k, v in row.items() if k not in PERIODIC_PHASES) for row in rows])
        )
    return profile


def trainer_vs_bare(
    spec: ModelSpec, source, student, opts, chunks: int, method: str = "smile", chunk_steps: int = 20, skip: int = 2
) -> dict:
    """Mean step time of `SmileTrainer.train()` over that of a bare loop doing the same step (`method`: any method
    spec; the report shows "smile" and "finetune"), on the same data, alternating chunks of `chunk_steps` measured steps. With "finetune" the ratio is
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
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=spec.batch_size, shuffle=True, collate_fn=transformers.default_data_collator,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    bare = BareLoop(method, source, student, opts, args, batches=lambda: loader)

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
