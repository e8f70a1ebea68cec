# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The trainers of the GPU speed preset (the stock `Trainer`, `SmileTrainer` fine-tuning and SMILE), each stepped as
`Trainer.train` steps it, and the teacher's forward alone."""

from __future__ import annotations

import copy
import tempfile
import warnings

import torch
import transformers
from torch import nn

from smile_hf import SmileTrainer

from .gpu_models import GpuModelSpec
from .speed_models import TensorDataset
from .stepping import stock_step_settings, training_arguments

TRAINER_MODES = ("stock-finetune", "smiletrainer-finetune", "smile")
MODES = (*TRAINER_MODES, "teacher-forward")


def stock_arguments(opts, batch_size: int) -> transformers.TrainingArguments:
    """The stock `TrainingArguments` of `training_arguments` (the same optimiser and settings) without the
    SMILE fields."""
    return transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="smile-speed-gpu-"),
        max_steps=10**7,
        **stock_step_settings(opts, batch_size),
    )


def build_trainer(mode: str, spec: GpuModelSpec, source: nn.Module, student: nn.Module, opts) -> transformers.Trainer:
    """The trainer of `mode`, on its own copies of the models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "stock-finetune":
            return transformers.Trainer(model=copy.deepcopy(student), args=stock_arguments(opts, spec.batch_size))
        method = {"smiletrainer-finetune": "finetune", "smile": "smile"}[mode]
        args = training_arguments(method, opts, spec.batch_size, 10**7)
        images = torch.zeros(2, 3, spec.image_size, spec.image_size)
        return SmileTrainer(
            model=copy.deepcopy(student), args=args, teacher_model=copy.deepcopy(source),
            train_dataset=TensorDataset(images, torch.zeros(2, dtype=torch.long)),
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
        if isinstance(trainer, SmileTrainer):  # what `SmileTrainer.train` runs first (never called here)
            trainer.regularizer.setup(trainer.regularizer_context())
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
            tensors += list(tr.regularizer.state_dict().values())
        return tensors


class TeacherForward:
    """One forward of a SMILE trainer's teacher on the batch, as its `compute_loss` runs it."""

    def __init__(self, smile: LoopStepper):
        self.loss_fn, self.device = smile.trainer.loss_fn, smile.device
        self.pixel_values = smile.batch["pixel_values"]
        self.mix = self.loss_fn.draw_mix(self.pixel_values, smile.model, 0)

    def step(self) -> None:
        self.loss_fn.teacher_forward(self.pixel_values, self.mix)
