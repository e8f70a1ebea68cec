# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The loss of one micro-batch, usable with or without a `Trainer` (in the spirit of timm's `TrainingTask`).

[`TransferLoss`] does, for one batch of images and hard labels: draw the mix (or take the one given), run the student
once on the mixed batch, run the teacher once (methods that need one), and add the method's terms to the mixed
cross-entropy of the new head:

    loss = L_main + sum over the method's terms of weight * value
    L_main = lambda CE(z, y) + (1 - lambda) CE(z, y[perm])   (label-smoothed, or a `compute_loss_func`: [`TargetLoss`])

For a text classifier the "images" are the mapping of `input_ids` and `attention_mask`, mixed in embedding space by
the [`smile_hf.backbones.text.TextBackboneAdapter`]. [`SmileTrainer.compute_loss`] calls it; it also runs every regulariser in a plain PyTorch loop (see
`TransferLoss`'s example); tests drive it with an explicit [`Mix`].
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .backbones import SOURCE_HEAD_NAME, BackboneAdapter, ForwardOutput, unwrap_model
from .backbones.capture import Capture
from .methods import REGULARIZERS, UNLABELED_VIEWS, LossInputs, LossTerms, Regularizer, UnlabeledInputs, parse_method
from .mixing import Mix, mixing_generator, sample_mix
from .target import TargetLoss
from .teacher import Teacher


@dataclass
class LossOutput:
    """What [`TransferLoss`] computed for one micro-batch.

    Attributes:
        loss: the weighted sum of the terms (a scalar with autograd state).
        terms: every term, name -> (weight, unweighted value), `main` included.
        mix: the mix applied (None without mixing or in the final plain phase).
        student: the student's forward output on the (mixed) batch.
        statistics: what the method measures besides its terms (FixMatch's `pseudo_label_rate`), name -> scalar;
            logged under its name, never added to the loss.
    """

    loss: torch.Tensor
    terms: LossTerms
    mix: Mix | None
    student: ForwardOutput
    statistics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class UnlabeledOutput:
    """What [`TransferLoss.unlabeled_terms`] computed for one batch of unlabelled images.

    Attributes:
        terms: the method's terms on them, name -> (weight, unweighted value).
        statistics: what the method measures on them besides its terms (logged, never added to the loss).
    """

    terms: LossTerms
    statistics: dict[str, torch.Tensor]


class TransferLoss:
    """The loss of one micro-batch for a transfer-learning method.

    Args:
        method (`Regularizer` or `str`): the regulariser (its loss terms and declared needs), or a method spec
            (`"l2sp+mixup"`): its regulariser is then built with `hyperparameters` and its mixing strategy is used.
        adapter (`BackboneAdapter`): the backbone adapter of the student's family.
        teacher (`Teacher`, *optional*): the teacher ([`EmaTeacher`], or [`smile_hf.lora.LoraEmaTeacher`] for a LoRA
            student: any [`Teacher`]), for regularisers with `needs_teacher`.
        mixing (`str`, *optional*): the mixing strategy (`"mixup"`, `"cutmix"`, `"manifold_mixup"`) or None; with a
            method spec, taken from the spec.
        alpha (`float`, *optional*, defaults to 0.2): lambda ~ Beta(alpha, alpha).
        seed (`int`, *optional*, defaults to 0): with the step, micro-batch and rank, determines each mix.
        rank (`int`, *optional*, defaults to 0): the process index.
        channels_last (`bool`, *optional*, defaults to `False`): pass the images in the channels-last memory format.
        target_loss (`TargetLoss`, *optional*): `L_main` (label smoothing, or a `compute_loss_func`); defaults to the
            plain mixed cross-entropy. The methods' own terms never use it.
        **hyperparameters: with a method spec, the regulariser's hyperparameters (`l2sp_alpha=0.1`...).

    A plain PyTorch loop (the regulariser's one-off work reads a [`RegularizerContext`]):

    ```python
    loss_fn = TransferLoss("l2sp+mixup", BackboneAdapter(model), l2sp_alpha=0.01)
    context = RegularizerContext(model, loss_fn.adapter, batches=lambda: loader, device=device)
    loss_fn.regularizer.to(device).setup(context)
    loss_fn.regularizer.prepare(context)
    for step, batch in enumerate(loader):
        x, y = batch["pixel_values"].to(device), batch["labels"].to(device)
        loss = loss_fn(model, x, y, loss_fn.draw_mix(x, model, step)).loss
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        loss_fn.regularizer.on_step_end(context, step + 1, num_steps)
    ```
    """

    def __init__(
        self,
        method: Regularizer | str,
        adapter: BackboneAdapter,
        teacher: Teacher | None = None,
        *,
        mixing: str | None = None,
        alpha: float = 0.2,
        seed: int = 0,
        rank: int = 0,
        channels_last: bool = False,
        target_loss: TargetLoss | None = None,
        **hyperparameters: Any,
    ):
        if isinstance(method, str):
            if mixing is not None:
                raise ValueError(f"The method spec '{method}' sets the mixing: leave `mixing` unset.")
            regulariser, mixing = parse_method(method.strip().lower())
            method = REGULARIZERS[regulariser](**hyperparameters)
        elif hyperparameters:
            raise TypeError(f"Pass the hyperparameters {sorted(hyperparameters)} to the regulariser, not to TransferLoss.")
        if method.needs_teacher and teacher is None:
            raise ValueError(f"Method '{method.name}' needs a teacher.")
        adapter.check_method(method, mixing)
        self.regularizer = method
        self.adapter = adapter
        self.teacher = teacher
        self.mixing = mixing
        self.alpha = alpha
        self.seed = seed
        self.rank = rank
        self.channels_last = channels_last
        self.target_loss = target_loss if target_loss is not None else TargetLoss()

    @classmethod
    def from_args(
        cls, method: Regularizer, adapter: BackboneAdapter, teacher: Teacher | None, args, loss_func=None
    ):
        """The loss configured by a `SmileTrainingArguments` (and a `Trainer` `compute_loss_func`, see
        [`TargetLoss`])."""
        alpha = args.cutmix_alpha if args.mixing == "cutmix" else args.mixup_alpha
        return cls(
            method, adapter, teacher, mixing=args.mixing, alpha=alpha, seed=args.seed, rank=args.process_index,
            channels_last=args.channels_last, target_loss=TargetLoss(args.label_smoothing_factor, loss_func),
        )  # fmt: skip

    def draw_mix(
        self, pixel_values: torch.Tensor, model: nn.Module, step: int, micro_step: int = 0, stream: int = 0
    ) -> Mix | None:
        """The mix of a micro-batch, determined by (seed, step, micro-batch, rank), on the batch's device; None
        without mixing. `stream` > 0 draws another mix for the same position (the unlabelled batch's)."""
        if self.mixing is None:
            return None
        images = isinstance(pixel_values, torch.Tensor)  # else the inputs of a text model (`input_ids`...)
        mix = sample_mix(
            self.mixing,
            self.alpha,
            self.adapter.batch_size(pixel_values),
            mixing_generator(self.seed, step, micro_step, self.rank, stream),
            image_hw=tuple(pixel_values.shape[-2:]) if images else None,
            num_stages=len(self.adapter.stages(model)) if self.mixing == "manifold_mixup" else 0,
            dominant=self.regularizer.dominant_mix,
        )
        return mix.to(pixel_values.device if images else pixel_values["input_ids"].device)

    def student_forward(self, model: nn.Module, pixel_values: torch.Tensor, mix: Mix | None) -> ForwardOutput:
        """One forward pass of the student on the mixed batch (the mix is inside the backbone for manifold mixup)."""
        return self.adapter.forward(
            model,
            pixel_values,
            source_head=getattr(unwrap_model(model), SOURCE_HEAD_NAME, None),
            output_hidden_states=self.regularizer.needs_hidden_states,
            mix=mix,
        )

    def reading_student(self, model: nn.Module) -> AbstractContextManager[Capture]:
        """A context within which a forward pass of the student on an unmixed batch, run by the caller, is read as
        [`~TransferLoss.student_forward`] reads its own (the source head applied, the stages recorded if the method
        needs them): `adapter.forward_output(capture, outputs, image_hw)` then gives what `student_forward` would
        have. Evaluation reads its stock forward pass this way instead of running the student twice."""
        inner = unwrap_model(model)
        capture = Capture(
            trunk=None,
            heads=(),
            source_head=getattr(inner, SOURCE_HEAD_NAME, None),
            stages=self.adapter.stages(inner) if self.regularizer.needs_hidden_states else (),
        )
        return self.adapter.reading(model, capture)

    def teacher_forward(self, pixel_values: torch.Tensor, mix: Mix | None) -> ForwardOutput:
        """One forward pass of the teacher: on the unmixed images, or on the mixed batch (`teacher_sees_mix`)."""
        return self.teacher(
            pixel_values,
            output_hidden_states=self.regularizer.needs_hidden_states,
            mix=mix if self.regularizer.teacher_sees_mix else None,
        )

    def __call__(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        mix: Mix | None = None,
        *,
        final_phase: bool = False,
        student: ForwardOutput | None = None,
    ) -> LossOutput:
        """The loss of the micro-batch (`pixel_values` unmixed, `labels` hard) under `mix`.

        In the final plain phase, `mix` must be None and the teacher is not run. `student`: the student's output on
        the batch under `mix`, if already computed ([`~TransferLoss.reading_student`]); else the student is run.
        """
        if final_phase and mix is not None:
            raise ValueError("The final plain phase trains without mixing: pass mix=None.")
        if self.channels_last and isinstance(pixel_values, torch.Tensor) and pixel_values.dim() == 4:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        if student is None:
            student = self.student_forward(model, pixel_values, mix)
        teacher = self.teacher_forward(pixel_values, mix) if self.teacher is not None and not final_phase else None
        return self.combine(model, pixel_values, labels, mix, student, teacher, final_phase=final_phase)

    def unlabeled_terms(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        mix: Mix | None = None,
        other_view: torch.Tensor | None = None,
        *,
        step: int = 0,
        max_steps: int = 0,
    ) -> UnlabeledOutput:
        """The regulariser's terms (and statistics) on a batch of unlabelled images (`pixel_values`, the weak view),
        which no label goes with: for `unlabeled_views="mix"`, the student on the batch mixed by `mix` and the teacher
        on the unmixed batch; for `"weak_strong"`, the student on the weak view without gradient and on the strong
        view (`other_view`); for `"two_views"`, the student on `pixel_values` (the method reads the second view,
        `other_view`, itself). `step` / `max_steps`: the training position (for terms whose weight follows it)."""
        views, name = self.regularizer.unlabeled_views, self.regularizer.name
        if views not in UNLABELED_VIEWS:
            raise ValueError(f"Method '{name}' cannot use unlabelled images.")
        if views != "mix" and other_view is None:
            raise ValueError(f"Method '{name}' needs a second view of the unlabelled images (`other_view`).")
        pixel_values, other_view = (self._memory_format(x) for x in (pixel_values, other_view))
        teacher = weak = None
        if views == "mix":
            student = self.student_forward(model, pixel_values, mix)
            teacher = self.teacher_forward(pixel_values, mix) if self.teacher is not None else None
        elif views == "weak_strong":
            with torch.no_grad():
                weak = self.student_forward(model, pixel_values, None)
            student = self.student_forward(model, other_view, None)
        else:
            student = self.student_forward(model, pixel_values, None)
        inputs = UnlabeledInputs(pixel_values, mix, student, teacher, weak, unwrap_model(model), self.adapter,
                                 other_view, step, max_steps)  # fmt: skip
        regularizer = self.regularizer
        return UnlabeledOutput(regularizer.unlabeled_loss_terms(inputs), regularizer.unlabeled_statistics(inputs))

    def _memory_format(self, images: torch.Tensor | None) -> torch.Tensor | None:
        """`images` in channels-last where the loss runs so (`channels_last`)."""
        if self.channels_last and images is not None and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def combine(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        mix: Mix | None,
        student: ForwardOutput,
        teacher: ForwardOutput | None,
        *,
        final_phase: bool = False,
    ) -> LossOutput:
        """The mixed cross-entropy and the method's terms, from the forward outputs of student and teacher (the last
        step of `__call__`, public so that a profiler can time the forward passes apart)."""
        inputs = LossInputs(pixel_values, labels, mix, student, teacher, unwrap_model(model), self.adapter, final_phase)
        terms = {"main": (1.0, self.target_loss(student.logits, labels, mix))}
        terms.update(self.regularizer.loss_terms(inputs))
        loss = sum(weight * value for weight, value in terms.values())
        return LossOutput(loss, terms, mix, student)
