# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a transfer-learning method is to [`SmileTrainer`]: a set of loss terms and a few declared needs.

The trainer does the wiring (mixing, forward passes, the teacher, logging); a method only turns the outputs of
one step into named, weighted loss terms. Adding a method is one new module with one class decorated by
[`register_method`].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import TrainerCallback

if TYPE_CHECKING:

    from ..backbones import BackboneAdapter, ForwardOutput
    from ..config import SmileTrainingArguments
    from ..mixing import Mix
    from ..trainer import SmileTrainer


@dataclass
class LossInputs:
    """Everything a method may read to compute its terms for one batch.

    Attributes:
        pixel_values: the unmixed images.
        labels: hard labels (B,).
        mix: the mix applied to the student's input (None without mixing or in the final phase).
        student: the student's forward output on the (mixed) images.
        teacher: the teacher's forward output on the unmixed images, or on the mixed batch for methods with
            `teacher_sees_mix` (methods that need a teacher).
        model: the unwrapped student.
        adapter: the backbone adapter of the student's family.
        final_phase: whether the step belongs to the final plain fine-tuning phase.
    """

    pixel_values: torch.Tensor
    labels: torch.Tensor
    mix: Mix | None
    student: ForwardOutput
    teacher: ForwardOutput | None
    model: nn.Module
    adapter: BackboneAdapter
    final_phase: bool = False


LossTerms = dict[str, tuple[float, torch.Tensor]]
"""Named loss terms: name -> (weight, unweighted value). Logged as `loss_<name>`; the loss is the weighted sum."""


class TransferMethod:
    """Base class of the methods. Subclasses set the class attributes they need and override `loss_terms`.

    Class attributes:
        name: the value of `SmileTrainingArguments.method` that selects the method.
        default_mixing: mixing used when the method is named alone (SMILE: "mixup").
        dominant_mix: lambda is flipped to max(lambda, 1 - lambda), so the original sample dominates (SMILE).
        needs_teacher: a frozen copy of the source model is run on the unmixed images each step.
        ema_teacher: the teacher follows the student's backbone by EMA (`ema_decay`, `ema_update_every`).
        teacher_sees_mix: the teacher runs on the student's mixed batch (DELTA) instead of the unmixed images (SMILE).
        needs_source_head: a trainable copy of the source head is attached to the student and applied to its pooled
            feature inside the forward pass (`ForwardOutput.source_logits`).
        needs_hidden_states: the per-stage feature maps of student and teacher are computed.
        has_final_phase: the last `final_finetune_fraction` of training drops mixing and the teacher.
        needs_source_model: the pre-trained model with its original head must be loaded (for the teacher or the
            source head); derived from `needs_teacher` and `needs_source_head` unless a subclass sets it.
        title: readable name (model cards, reports).
        paper: the reference of the method's paper.
        description: one paragraph for the model card: what the method trains and how.
        hyperparameters: the `SmileTrainingArguments` fields the method reads (listed on the model card).
    """

    name: ClassVar[str]
    default_mixing: ClassVar[str | None] = None
    dominant_mix: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    ema_teacher: ClassVar[bool] = False
    teacher_sees_mix: ClassVar[bool] = False
    needs_source_head: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    has_final_phase: ClassVar[bool] = False
    needs_source_model: ClassVar[bool] = False
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    hyperparameters: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "needs_source_model" not in cls.__dict__:
            cls.needs_source_model = cls.needs_teacher or cls.needs_source_head
        if not cls.title:
            cls.title = getattr(cls, "name", cls.__name__)

    def __init__(self, args: SmileTrainingArguments):
        self.args = args

    def setup(self, trainer: SmileTrainer) -> None:
        """One-off work when `train()` is called, before a checkpoint's state is restored (e.g. snapshot the
        starting weights; a resumed run then overwrites them with the saved ones)."""

    def prepare(self, trainer: SmileTrainer) -> None:
        """One-off work when training begins, after a checkpoint's state was restored and before the first step
        (statistics of the source model on the training data, which a resumed run need not recompute)."""

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        """The method's terms beyond the main (mixed) cross-entropy."""
        return {}

    def callbacks(self, trainer: SmileTrainer) -> list[TrainerCallback]:
        """Trainer callbacks the method needs (e.g. head re-initialisation)."""
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State to save in checkpoints (tensors only, for safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""


class PrepareCallback(TrainerCallback):
    """Runs `method.prepare(trainer)` when training begins: after a checkpoint's state has been restored (so a
    resumed run does not recompute what it saved) and before the first optimizer step. [`SmileTrainer`] adds one
    for its method."""

    def __init__(self, method: TransferMethod, trainer: SmileTrainer):
        self.method = method
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.method.prepare(self.trainer)


def progress_disabled(trainer) -> bool:
    """Whether a one-off pass shows no progress bar: `--disable_tqdm`, or not the first process of its machine."""
    return bool(trainer.args.disable_tqdm) or not trainer.is_local_process_zero()


def for_each_training_batch(
    trainer, fn: Callable[[torch.Tensor, torch.Tensor], None], max_batches=None, desc: str | None = None
) -> int:
    """Call `fn(pixel_values, labels)` on the batches of `trainer`'s training dataloader (at most `max_batches`),
    on the training device, leaving the global random state as it was; with `desc`, a tqdm progress bar of that
    name ([`progress_disabled`] hides it). Returns the number of batches seen."""
    device = trainer.args.device
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    seen = 0
    loader = trainer.get_train_dataloader()
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(total=total, desc=desc, leave=False, disable=desc is None or progress_disabled(trainer))
    with torch.random.fork_rng(devices=devices), bar:
        for batch in loader:
            if max_batches is not None and seen >= max_batches:
                break
            fn(batch["pixel_values"].to(device), batch["labels"].to(device))
            seen += 1
            bar.update(1)
    return seen


def half_squared_norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """1/2 * sum of squared L2 norms: the weight penalty of L2-SP's head term and SMILE's L_cls (the tensors
    flattened into one vector: a few operators instead of three per tensor, forward and backward)."""
    return 0.5 * torch.cat([t.reshape(-1) for t in tensors]).square().sum()
