# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a regulariser is to [`TransferLoss`] and [`SmileTrainer`]: an `nn.Module` turning the outputs of one step
into named, weighted loss terms, with its declared hyperparameters, its needs and its state (registered buffers).

The words method, method spec, regulariser and mixing strategy are defined once, in [`smile_hf.methods`].

The trainer does the wiring (mixing, forward passes, the teacher, logging). Adding a regulariser is one new module
with one class decorated by [`register_regularizer`]; its [`HyperParameter`]s become `SmileTrainingArguments` fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers import TrainerCallback

from ..shards import sum_over_shards
from .buffers import CreatesSavedBuffers
from .context import RegularizerContext
from .hyperparameters import HyperParameter, resolve_values

if TYPE_CHECKING:

    from ..backbones import BackboneAdapter, ForwardOutput
    from ..mixing import Mix


@dataclass
class LossInputs:
    """Everything a method may read to compute its terms for one batch.

    Attributes:
        pixel_values: the unmixed images (for a text model, the mapping of its unmixed `input_ids`,
            `attention_mask`...: [`smile_hf.backbones.text.TextBackboneAdapter.model_inputs`]).
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


@dataclass
class UnlabeledInputs:
    """What a method reads to compute its terms on one batch of unlabelled images (no label exists).

    Attributes:
        pixel_values: the unmixed unlabelled images (the training transform: the weak view).
        mix: the mix of the unlabelled batch among itself (`unlabeled_views="mix"`; None otherwise).
        student: the student's forward output on the mixed images (`"mix"`), on the strong view (`"weak_strong"`) or
            on `pixel_values` (`"two_views"`).
        teacher: the teacher's forward output on the unmixed images (`"mix"`; None otherwise).
        weak: the student's forward output on the weak view, without gradient (`"weak_strong"`; None otherwise).
        model: the unwrapped student.
        adapter: the backbone adapter of the student's family.
        other_view: a second draw of the training transform of the same images (`"two_views"`; None otherwise).
        step: the optimizer step the batch belongs to (0-based), and `max_steps` the run's number of steps.
    """

    pixel_values: torch.Tensor
    mix: Mix | None
    student: ForwardOutput
    teacher: ForwardOutput | None
    weak: ForwardOutput | None
    model: nn.Module
    adapter: BackboneAdapter
    other_view: torch.Tensor | None = None
    step: int = 0
    max_steps: int = 0


UNLABELED_VIEWS = ("mix", "weak_strong", "two_views")
"""What a regulariser computes on unlabelled images: `"mix"` (the batch mixed among itself, student on the mix, teacher
on the unmixed images: SMILE), `"weak_strong"` (student on a weak view without gradient and on a strong view:
FixMatch) or `"two_views"` (student on one draw of the training transform, the method's own model on a second draw:
Mean Teacher)."""

LossTerms = dict[str, tuple[float, torch.Tensor]]
"""Named loss terms: name -> (weight, unweighted value). Logged as `loss_<name>`; the loss is the weighted sum."""


class Regularizer(CreatesSavedBuffers):
    """Base class of the regularisers. Subclasses set the class attributes they need and override `loss_terms`.

    A regulariser is an `nn.Module` without parameters: what it computes once (L2-SP's starting point, DELTA's
    attention, Co-Tuning's relationship) is held in registered buffers, so that it moves with `.to()` and is saved
    by `state_dict()`. It runs without a `Trainer`: [`TransferLoss`] computes its terms, and its one-off work
    (`setup`, `prepare`) and per-step work (`on_step_end`) read a [`RegularizerContext`].

    Args:
        args (`SmileTrainingArguments`, *optional*, positional): read the hyperparameters from these arguments (as
            `from_args`); keywords given as well take precedence.
        **hyperparameters: the values of the declared `hyperparameters` (the others keep their defaults). An
            undeclared name is a `TypeError`, an invalid value a `ValueError`. Each value is an attribute.

    Class attributes:
        name: the regulariser's name in a method spec (`SmileTrainingArguments.method`).
        hyperparameters: the [`HyperParameter`]s the regulariser reads, declared once: they are the
            `SmileTrainingArguments` fields and flags, their checks, the model card's list and the search space.
        default_mixing: mixing used when the regulariser is named alone (SMILE: "mixup").
        dominant_mix: lambda is flipped to max(lambda, 1 - lambda), so the original sample dominates (SMILE).
        needs_teacher: a frozen copy of the source model is run on the unmixed images each step.
        ema_teacher: the teacher follows the student's backbone by EMA (`ema_decay`, `ema_update_every`).
        teacher_sees_mix: the teacher runs on the student's mixed batch (DELTA) instead of the unmixed images (SMILE).
        needs_source_head: a trainable copy of the source head is attached to the student and applied to its pooled
            feature inside the forward pass (`ForwardOutput.source_logits`).
        source_head_optional: a source checkpoint without a classification head (a text encoder's pre-training
            checkpoint) only turns the source-head terms off (SMILE's `L_aux`) instead of being refused.
        needs_hidden_states: the per-stage feature maps of student and teacher are computed.
        has_final_phase: the last `final_finetune_fraction` of training drops mixing and the teacher.
        needs_source_model: the pre-trained model with its original head must be loaded (for the teacher or the
            source head); derived from `needs_teacher` and `needs_source_head` unless a subclass sets it.
        title: readable name (model cards, reports).
        paper: the reference of the regulariser's paper.
        description: one paragraph for the model card: what the regulariser trains and how.
        unlabeled_views: how the regulariser uses unlabelled images ([`UNLABELED_VIEWS`]); None: it cannot, and
            [`SmileTrainer`] refuses an `unlabeled_dataset`.
        requires_unlabeled: the regulariser is meaningless without unlabelled images (FixMatch).
        default_unlabeled_batch_ratio: unlabelled images per labelled image of a step when
            `unlabeled_batch_ratio` is unset.
    """

    name: ClassVar[str]
    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = ()
    default_mixing: ClassVar[str | None] = None
    dominant_mix: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    ema_teacher: ClassVar[bool] = False
    teacher_sees_mix: ClassVar[bool] = False
    needs_source_head: ClassVar[bool] = False
    source_head_optional: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    has_final_phase: ClassVar[bool] = False
    needs_source_model: ClassVar[bool] = False
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    unlabeled_views: ClassVar[str | None] = None
    requires_unlabeled: ClassVar[bool] = False
    default_unlabeled_batch_ratio: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "needs_source_model" not in cls.__dict__:
            cls.needs_source_model = cls.needs_teacher or cls.needs_source_head
        if not cls.title:
            cls.title = getattr(cls, "name", cls.__name__)

    def __init__(self, args: Any = None, /, **hyperparameters: Any):
        super().__init__()
        if args is not None:
            hyperparameters = {**self.values_from(args), **hyperparameters}
        for name, value in resolve_values(self.hyperparameters, hyperparameters, type(self).__name__).items():
            setattr(self, name, value)

    @classmethod
    def values_from(cls, args: Any) -> dict[str, Any]:
        """The declared hyperparameters that are attributes of `args` (a `SmileTrainingArguments`), by name."""
        return {h.name: getattr(args, h.name) for h in cls.hyperparameters if hasattr(args, h.name)}

    @classmethod
    def from_args(cls, args: Any) -> Regularizer:
        """The regulariser with the hyperparameters of `args` (a `SmileTrainingArguments`); a declared
        hyperparameter that is not a field of `args` keeps its default."""
        return cls(args)

    @classmethod
    def search_space(cls) -> dict[str, dict[str, Any]]:
        """The default search space of the regulariser's hyperparameters, free of any tuning library: name ->
        `{"type": "float" | "int", "low", "high", "log"}` or `{"type": "categorical", "choices"}` (see
        [`HyperParameter.search_dimension`]); hyperparameters declared without `search` are left out."""
        space = {h.name: h.search_dimension() for h in cls.hyperparameters}
        return {name: dimension for name, dimension in space.items() if dimension is not None}

    def setup(self, context: RegularizerContext) -> None:
        """One-off work when training starts, before a checkpoint's state is restored (e.g. snapshot the starting
        weights; a resumed run then overwrites them with the saved ones). A trainer may be passed instead of a
        context ([`as_context`])."""

    def prepare(self, context: RegularizerContext) -> None:
        """One-off work when training begins, after a checkpoint's state was restored and before the first step
        (statistics of the source model on the training data, which a resumed run need not recompute). A trainer
        may be passed instead of a context ([`as_context`])."""

    def on_step_end(self, context: RegularizerContext, step: int, max_steps: int) -> None:
        """Work after optimizer step `step` (1-based) of `max_steps` (e.g. RIFLE's re-initialisation of the head)."""

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        """The regulariser's terms beyond the main (mixed) cross-entropy."""
        return {}

    def unlabeled_loss_terms(self, inputs: UnlabeledInputs) -> LossTerms:
        """The regulariser's terms on a batch of unlabelled images (regularisers with `unlabeled_views`); their names
        must differ from those of `loss_terms`, their weights are the regulariser's."""
        return {}

    def unlabeled_statistics(self, inputs: UnlabeledInputs) -> dict[str, torch.Tensor]:
        """What the regulariser measures on a batch of unlabelled images besides its terms (scalars without
        gradient, e.g. FixMatch's `pseudo_label_rate`): logged under their names, never added to the loss."""
        return {}

    def forward(self, inputs: LossInputs) -> LossTerms:
        """`loss_terms(inputs)`."""
        return self.loss_terms(inputs)

    def callbacks(self, trainer) -> list[TrainerCallback]:
        """Trainer callbacks for needs that only a `Trainer` has (none of the built-in regularisers has one)."""
        return []

    def follow_device(self, device: torch.device) -> None:
        """Move the buffers to `device` if they are elsewhere (once, after a state was loaded on the CPU)."""
        first = next(self.buffers(), None)
        if first is not None and first.device != device:
            self.to(device)

    def missing_buffers(self, saved: dict[str, torch.Tensor]) -> list[str]:
        """The buffers registered as `None` (not computed yet) that `saved` holds: created with the saved shape."""
        return [name for name, buffer in self._buffers.items() if buffer is None and name in saved]


class RegularizerCallback(TrainerCallback):
    """Runs a regulariser's work in a `Trainer`: `prepare` when training begins (after a checkpoint's state has been
    restored, so a resumed run does not recompute what it saved, and before the first optimizer step) and
    `on_step_end` after every optimizer step. [`SmileTrainer`] adds one for its regulariser.

    Args:
        regularizer (`Regularizer`): the regulariser.
        context (`Callable[[], RegularizerContext]`): builds the context (called when training begins).
    """

    def __init__(self, regularizer: Regularizer, context: Callable[[], RegularizerContext]):
        self.regularizer = regularizer
        self.make_context = context
        self.context: RegularizerContext | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.context = self.make_context()
        self.regularizer.prepare(self.context)

    def on_step_end(self, args, state, control, **kwargs):
        if self.context is None:
            self.context = self.make_context()
        self.regularizer.on_step_end(self.context, state.global_step, state.max_steps)


def half_squared_norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """1/2 * sum of squared L2 norms: the weight penalty of L2-SP's head term and SMILE's L_cls (the tensors
    flattened into one vector: a few operators instead of three per tensor, forward and backward). FSDP2 shards are
    summed locally and all-reduced ([`smile_hf.shards.sum_over_shards`])."""
    return sum_over_shards(_half_squared_norm, list(tensors))


def _half_squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return 0.5 * torch.cat([t.reshape(-1) for t in tensors]).square().sum()
