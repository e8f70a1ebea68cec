# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The teacher: a frozen copy of the pre-trained source model, source head included, fixed ([`FixedTeacher`]) or
following the student ([`EmaTeacher`]).

SMILE's mean teacher follows the student's backbone by an exponential moving average,
`theta_t <- d * theta_t + (1 - d) * theta_s`, every `update_every` optimizer steps, with one fused
`torch._foreach_lerp_` over all tensors. Its head (the source classifier) is never updated, it stays in eval
mode (BatchNorm uses running statistics) and no gradient ever reaches it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn
from transformers import TrainerCallback

from .backbones import BackboneAdapter, ForwardOutput, unwrap_model
from .folding import ForwardCopy
from .mixing import Mix
from .shards import local_pairs


class Teacher(nn.Module):
    """What [`SmileTrainer`] and the methods use of a teacher, whatever it is ([`FixedTeacher`] or [`EmaTeacher`], a
    full copy of the source model, or [`smile_hf.lora.LoraEmaTeacher`], an adapter on a LoRA student's frozen base):

    - `forward(pixel_values, output_hidden_states=False, mix=None)`: the source logits and feature maps of the images
      (a [`ForwardOutput`]), without autograd state;
    - `update(student)`: one EMA step towards the student; `should_update(global_step)` tells when;
    - `state_dict()` / `load_state_dict()`: everything a resumed run needs (with the EMA counter `num_updates`);
    - `model`: the source model (as the teacher runs it) for methods that run it themselves; `adapter`;
    - `compile_model(backend, mode)`: compiles what the Trainer does not already compile (`torch_compile`).

    A teacher always stays in eval mode. Subclasses call `super().__init__` with the EMA options below.

    Args:
        adapter (`BackboneAdapter`): the adapter of the model family (shared with the student).
        decay (`float`): EMA decay d in [0, 1]; 1 keeps the teacher fixed.
        update_every (`int`): optimizer steps between two updates.
        include_buffers (`bool`): also average floating-point buffers (BatchNorm running statistics).
        autocast (`Callable[[], AbstractContextManager]`, *optional*): returns the mixed-precision context the
            teacher's forward runs under; [`SmileTrainer`] passes its accelerator's, the one the student's forward
            runs under (`bf16=True` / `fp16=True`). Defaults to none (the teacher's own precision).
    """

    def __init__(
        self,
        adapter: BackboneAdapter,
        decay: float = 0.999,
        update_every: int = 10,
        include_buffers: bool = False,
        autocast: Callable[[], AbstractContextManager] | None = None,
    ):
        super().__init__()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self.autocast = autocast or contextlib.nullcontext
        self.adapter = adapter
        self.decay = decay
        self.update_every = update_every
        self.include_buffers = include_buffers
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """A teacher is never trained: it stays in eval mode whatever `mode` is."""
        return super().train(False)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, mix: Mix | None = None
    ) -> ForwardOutput:
        """Source logits and feature maps of the images (mixed by `mix` if given, as the student's are)."""
        raise NotImplementedError

    def update(self, student: nn.Module) -> None:
        """One EMA step towards `student`: teacher <- lerp(teacher, student, 1 - decay)."""
        raise NotImplementedError

    def should_update(self, global_step: int) -> bool:
        """Whether the EMA runs after optimizer step number `global_step` (1-based)."""
        return self.decay < 1.0 and global_step % self.update_every == 0

    def compile_model(self, backend: str | None = None, mode: str | None = None) -> None:
        """Compile the teacher's own forward pass (`torch_compile`); nothing by default (a LoRA teacher runs the
        student's own modules)."""


class _SourceModelCopy(Teacher):
    """A teacher that runs its own frozen copy of the source model (`model`): what [`FixedTeacher`] and
    [`EmaTeacher`] share. Its `state_dict` keys are `model.*` and `num_updates`."""

    def __init__(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        decay: float,
        update_every: int,
        include_buffers: bool,
        autocast: Callable[[], AbstractContextManager] | None,
        fold_batchnorm: bool = False,
        forward_dtype: torch.dtype | None = None,
        forward_channels_last: bool = False,
    ):
        super().__init__(adapter, decay, update_every, include_buffers, autocast)
        self.model = model.eval().requires_grad_(False)
        # The forward pass may run a cheaper copy of `model` (BatchNorm folded, weights cast or channels-last):
        # `model` stays the exact EMA shadow, the copy follows it (refreshed after each update). Not a submodule:
        # not in the state.
        cheaper = fold_batchnorm or forward_dtype is not None or forward_channels_last
        self._forward_copy = (
            ForwardCopy(self.model, fold_batchnorm, forward_dtype, forward_channels_last) if cheaper else None
        )

    def _apply(self, fn, *args, **kwargs):
        if getattr(self, "_forward_copy", None) is not None:
            self._forward_copy.invalidate()  # `to`, `cuda`, `half`...: the copy is built again from the moved model
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self._forward_copy is not None:
            self._forward_copy.invalidate()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def forward_model(self) -> nn.Module:
        """The module the teacher's forward runs: `model`, or its folded / cast copy (built on the first forward)."""
        copy = self._forward_copy
        return self.model if copy is None or copy.copy is None else copy.copy

    def compile_model(self, backend: str | None = None, mode: str | None = None) -> None:
        """Compile the source model's forward pass (the Trainer compiles the student only), and the folded / cast
        copy the forward pass runs, if any."""
        self.model.compile(backend=backend, mode=mode)
        if self._forward_copy is not None:
            self._forward_copy.compile_options = {"backend": backend, "mode": mode}
            self._forward_copy.invalidate()

    @torch.no_grad()
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, mix: Mix | None = None
    ) -> ForwardOutput:
        """Source logits and feature maps of the images (mixed by `mix` if given, as the student's are), without
        autograd state, under `autocast`."""
        if self.model.training:  # `eval()` walks every submodule: only when someone switched the model to train
            self.model.eval()
        model, copy = self.model, self._forward_copy
        if copy is not None:
            model = copy.module(pixel_values)
            if model is copy.copy:  # (not while a method records the model's own layers)
                pixel_values = copy.prepare_input(pixel_values)
        with self.autocast():
            return self.adapter.forward(model, pixel_values, output_hidden_states=output_hidden_states, mix=mix)


class FixedTeacher(_SourceModelCopy):
    """A frozen copy of the source model that never changes: the teacher of the regularisers whose teacher does not
    follow the student (`ema_teacher = False`: DELTA and DELTA-TLlib, whose feature maps are compared with the
    pre-trained model's).

    An `nn.Module` holding the source model (`model`) and the EMA counter every teacher has (`num_updates`, 0 here),
    so that its `state_dict` has the keys of an [`EmaTeacher`] (`model.*`, `num_updates`): a checkpoint written with
    an `EmaTeacher` of decay 1 (the former form of a fixed teacher) loads into it unchanged. It always stays in eval
    mode.

    Args:
        model (`PreTrainedModel`): the source model (pre-trained backbone + source head). It is frozen in place.
        adapter (`BackboneAdapter`): the adapter of the model family.
        autocast (`Callable[[], AbstractContextManager]`, *optional*): see [`Teacher`].
        fold_batchnorm, forward_dtype, forward_channels_last: see [`EmaTeacher`].
    """

    def __init__(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        autocast: Callable[[], AbstractContextManager] | None = None,
        fold_batchnorm: bool = False,
        forward_dtype: torch.dtype | None = None,
        forward_channels_last: bool = False,
    ):
        super().__init__(
            model, adapter, 1.0, 1, False, autocast, fold_batchnorm, forward_dtype, forward_channels_last
        )

    def update(self, student: nn.Module) -> None:
        """A fixed teacher never moves (`should_update` is always False): calling `update` is an error."""
        raise RuntimeError("A FixedTeacher never follows the student: use an EmaTeacher with decay < 1.")


class EmaTeacher(_SourceModelCopy):
    """A frozen copy of the source model, as a [`FixedTeacher`], that follows a student's backbone by EMA (SMILE's mean
    teacher): the update `theta_t <- d * theta_t + (1 - d) * theta_s`, every `update_every` optimizer
    steps, as in timm's `ModelEmaV3`. The keys of its `state_dict` are `model.*` and the number of EMA updates made,
    `num_updates` (an int64 buffer).

    Args:
        model (`PreTrainedModel`): the source model (pre-trained backbone + source head). It is frozen in place.
        adapter, decay, update_every, include_buffers, autocast: see [`Teacher`] (decay 1 keeps it fixed; a
            [`FixedTeacher`] says so by its type).
        fold_batchnorm (`bool`, *optional*, defaults to `False`): the forward pass runs a copy of `model` with every
            BatchNorm that follows a convolution folded into it ([`smile_hf.folding.ForwardCopy`]), refolded from
            `model` (the exact, unfolded EMA shadow) after each update. Equal to the unfolded forward up to float
            rounding.
        forward_channels_last (`bool`, *optional*, defaults to `False`): the forward pass runs a copy of `model`
            whose 4-D weights, and its input, are in the channels-last memory format (CNNs: faster convolutions
            and pooling on the CPU as on recent GPUs), refreshed after each update.
        forward_dtype (`torch.dtype`, *optional*): the forward pass runs a copy of `model` cast to this dtype
            (`torch.bfloat16` when the student trains in bf16 autocast), re-cast after each update; the EMA shadow
            `model` stays in its own precision (float32), so that no small update rounds to zero.
    """

    def __init__(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        decay: float = 0.999,
        update_every: int = 10,
        include_buffers: bool = False,
        autocast: Callable[[], AbstractContextManager] | None = None,
        fold_batchnorm: bool = False,
        forward_dtype: torch.dtype | None = None,
        forward_channels_last: bool = False,
    ):
        super().__init__(
            model, adapter, decay, update_every, include_buffers, autocast, fold_batchnorm, forward_dtype,
            forward_channels_last,
        )  # fmt: skip
        # (weak reference to the student, teacher tensors, student tensors) of the last update: the pairs are
        # matched by name once, not at every update (see `_pairs`).
        self._pairs_cache: tuple[weakref.ref, list[torch.Tensor], list[torch.Tensor]] | None = None

    def _apply(self, fn, *args, **kwargs):
        self._pairs_cache = None  # `to`, `cuda`, `half`...: tensors may be replaced
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._pairs_cache = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _pairs(self, student: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(teacher tensors, student tensors) matched by name over the backbone.

        The parameter lists are built once per student and reused: parameters keep their identity through
        in-place updates, `load_state_dict` and `Module.to`. Buffers can be replaced (`Module.to` re-creates
        them), so with `include_buffers` the lists are rebuilt at every update.
        """
        inner = unwrap_model(student)
        cached = self._pairs_cache
        if cached is not None and cached[0]() is inner:
            return cached[1], cached[2]
        teacher_tensors, student_tensors = self._match(inner)
        if not self.include_buffers:
            self._pairs_cache = (weakref.ref(inner), teacher_tensors, student_tensors)
        return teacher_tensors, student_tensors

    def _match(self, student: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        teacher_tensors = dict(self.adapter.backbone_named_parameters(self.model))
        student_tensors = dict(self.adapter.backbone_named_parameters(student))
        if self.include_buffers:
            teacher_tensors.update(self.adapter.backbone_named_buffers(self.model))
            student_tensors.update(self.adapter.backbone_named_buffers(student))
        names = [n for n, t in teacher_tensors.items() if t.is_floating_point()]
        missing = [n for n in names if n not in student_tensors]
        if missing:
            raise ValueError(f"Teacher and student backbones differ: the student has no {missing[:3]}.")
        return [teacher_tensors[n] for n in names], [student_tensors[n] for n in names]

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step towards `student`'s backbone: teacher <- lerp(teacher, student, 1 - decay). Under FSDP2
        (teacher and student sharded alike) it runs on each rank's local shards, with no communication."""
        teacher_tensors, student_tensors = local_pairs(*self._pairs(student))  # FSDP2: this rank's shards
        if any(s.dtype != t.dtype for t, s in zip(teacher_tensors, student_tensors)):
            student_tensors = [s.to(dtype=t.dtype) for t, s in zip(teacher_tensors, student_tensors)]
        torch._foreach_lerp_(teacher_tensors, student_tensors, 1.0 - self.decay)
        self.num_updates += 1
        if self._forward_copy is not None:
            self._forward_copy.mark_stale()  # refolded (re-cast) from the shadow before the next forward


class EmaTeacherCallback(TrainerCallback):
    """Moves the teacher towards the (unwrapped) student after every `update_every`-th optimizer step,
    except during the final plain fine-tuning phase.

    Args:
        teacher (`Teacher`): the teacher to update.
        in_final_phase (`Callable[[int], bool]`): tells whether a step belongs to the final plain phase.
    """

    def __init__(self, teacher: Teacher, in_final_phase):
        self.teacher = teacher
        self.in_final_phase = in_final_phase

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if self.teacher.should_update(step) and not self.in_final_phase(step - 1):
            self.teacher.update(model)
