# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Trainers stepped one optimizer step at a time, as `Trainer.train` steps them, and step times interleaved over
methods in rounds (shared by the CPU and the GPU speed benchmarks)."""

from __future__ import annotations

import copy
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

from smile_hf import SmileTrainer, SmileTrainingArguments

from .common import quantiles
from .speed_models import ModelSpec, random_dataset


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


TEACHER_VARIANTS: dict[str, dict] = {
    "fold": {"teacher_fold_batchnorm": True},
    "cl": {"teacher_channels_last": True},
    "fold+cl": {"teacher_fold_batchnorm": True, "teacher_channels_last": True},
    "compile": {},  # the teacher alone compiled (`Teacher.compile_model`), the student as it is
    "bf16": {"teacher_bf16": True},
}
"""SMILE's teacher options measured beside plain SMILE, as `smile[<variant>]`: the fields each sets."""


def split_variant(name: str) -> tuple[str, dict, bool]:
    """(method, `SmileTrainingArguments` overrides, whether the teacher is compiled) of `smile[<variant>]` or a
    method name."""
    method, _, variant = name.partition("[")
    variant = variant.rstrip("]")
    if variant and variant not in TEACHER_VARIANTS:
        raise SystemExit(f"Unknown teacher variant '{variant}'; known: {', '.join(TEACHER_VARIANTS)}.")
    return method, dict(TEACHER_VARIANTS.get(variant, {})), variant == "compile"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class SteppedTrainer:
    """A `SmileTrainer` advanced one optimizer step at a time, with the work `Trainer.train` does per step."""

    def __init__(self, method: str, spec: ModelSpec, source: nn.Module, student: nn.Module, batch, opts, peft_config=None):
        self.max_steps = 10**7
        base_method, overrides, compile_teacher = split_variant(method)
        args = training_arguments(base_method, opts, spec.batch_size, self.max_steps, **overrides)
        dataset = random_dataset(spec, spec.batch_size * 2, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = SmileTrainer(
                model=copy.deepcopy(student), args=args, teacher_model=copy.deepcopy(source), train_dataset=dataset,
                peft_config=peft_config,
            )  # fmt: skip
        if compile_teacher:
            trainer.teacher.compile_model()
        trainer.create_optimizer_and_scheduler(num_training_steps=self.max_steps)
        trainer.state.max_steps = self.max_steps
        trainer.current_gradient_accumulation_steps = 1
        trainer.regularizer.setup(trainer.regularizer_context())  # what `SmileTrainer.train` runs first (never called here)
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
        tensors += list(self.trainer.regularizer.state_dict().values())
        return tensors

    def teacher_storages(self) -> list[torch.Tensor]:
        """The teacher's tensors: its model's parameters and buffers, and its state (for a LoRA teacher, which shares
        the student's base: its adapter in the shared model, its source head and its copy of the base's buffers)."""
        teacher = self.trainer.teacher
        if teacher is None:
            return []
        return list(teacher.model.parameters()) + list(teacher.model.buffers()) + list(teacher.state_dict().values())


def interleaved_step_times(
    steppers: dict[str, SteppedTrainer], rounds: int, warmup: int, seed: int = 0, clock=time.perf_counter
):
    """Per round, one step of each method in a shuffled order; returns {method: [seconds per round]} by `clock`
    (wall time, or `time.thread_time`: the CPU time of this thread, which other processes' load does not add to)."""
    rng = np.random.default_rng(seed)
    names = list(steppers)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            synchronize(steppers[name].device)
            start = clock()
            steppers[name].step()
            synchronize(steppers[name].device)
            if r >= warmup:
                times[name].append(clock() - start)
    return times


def step_time_summary(times: dict[str, list[float]], base: str) -> dict[str, dict]:
    """From [`interleaved_step_times`]: each method's step time in ms (`step_ms`), its ratio to method `base`'s step
    of the same round (`ratio`, both as [`quantiles`]) and the ratio of the mean step times (`ratio_of_means`)."""
    reference = times[base]
    return {
        "step_ms": {m: quantiles([1e3 * t for t in ts]) for m, ts in times.items()},
        "ratio": {m: quantiles([t / b for t, b in zip(ts, reference)]) for m, ts in times.items()},
        "ratio_of_means": {m: float(np.mean(ts) / np.mean(reference)) for m, ts in times.items()},
    }
