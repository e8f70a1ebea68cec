# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""SMILE with PEFT / LoRA: the student is the frozen pre-trained model plus LoRA adapters, and the teacher shares the
student's frozen base weights instead of being a second copy of the model.

- The student is a peft `PeftModel` (adapter `default`): the base model with LoRA layers, the new classifier head
  trained and saved as a `modules_to_save` copy, and the auxiliary source head (`smile_source_head`) attached as a
  plain trainable module (training-only: it goes into `method_state.safetensors`, not into the adapter).
- The teacher ([`LoraEmaTeacher`]) is a second adapter of the same `PeftModel` (PEFT's multiple adapters, named
  `smile_teacher`), started as a copy of the student's adapter and moved towards it by EMA:
  `theta_t <- d * theta_t + (1 - d) * theta_s` over the adapter tensors (LoRA A and B, each by itself). A freshly
  initialised LoRA adapter has B = 0, so at step 0 the teacher is exactly the source model. Its head is a frozen copy
  of the source head. It also keeps its own copy of the base model's floating-point buffers (BatchNorm running
  statistics, which the student's training-mode forward passes update in the shared modules) and swaps them in for
  its forward pass, so that it sees the source statistics as a full-copy teacher does (or their EMA with
  `ema_buffers`). Teacher memory: the adapter, the source head and the buffers, not the model.
- Methods whose teacher is never updated (DELTA) run the base model with the adapters switched off: no teacher
  adapter at all.

The teacher's forward pass switches the LoRA layers to the teacher adapter (or off), the whole model to eval mode,
and the buffers, then restores all three; parameters' `requires_grad` flags are never touched.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn
from transformers.utils import logging

from ._compat import compiled_inner, peft_tuner_layers, switch_adapters
from .backbones import BackboneAdapter, ForwardOutput, unwrap_model
from .mixing import Mix
from .teacher import EmaTeacher, FixedTeacher, Teacher

logger = logging.get_logger(__name__)

TEACHER_ADAPTER_NAME = "smile_teacher"
"""Name of the teacher's adapter in the student's `PeftModel`."""


def require_peft():
    """The `peft` module, or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as error:
        raise ImportError("LoRA training needs the `peft` package: `pip install smile_hf[peft]`.") from error
    return peft


def peft_model_of(model: nn.Module) -> nn.Module | None:
    """The peft `PeftModel` inside `model` (under DDP / `torch.compile` wrappers), or None if it is not one."""
    while not callable(getattr(type(model), "get_base_model", None)):
        inner = getattr(model, "module", None) or compiled_inner(model)
        if not isinstance(inner, nn.Module):
            return None
        model = inner
    return model


def wrap_student(model: nn.Module, peft_config=None) -> nn.Module:
    """The student for LoRA training: `get_peft_model(model, peft_config)` with the classifier head added to
    `modules_to_save`, or `model` itself when it is already a `PeftModel` (then its head must be trainable) or when
    `peft_config` is None."""
    if peft_config is None and peft_model_of(model) is None:
        return model
    peft = require_peft()
    adapter = BackboneAdapter(model)
    if peft_model_of(model) is not None:
        if peft_config is not None:
            raise ValueError("The model is already a PeftModel: pass `peft_config=None` (its adapter is trained).")
        if not all(p.requires_grad for p in adapter.head(model).parameters()):
            raise ValueError(
                f"The PeftModel's new classifier head is frozen: create it with `modules_to_save=['{adapter.spec.head}']`"
                " in its LoraConfig so that the head is trained and saved with the adapter."
            )
        return model
    config = copy.deepcopy(peft_config)
    config.modules_to_save = sorted(set(config.modules_to_save or ()) | set(adapter.spec.head.split(",")))
    return peft.get_peft_model(model, config)


def check_base_is_source(adapter: BackboneAdapter, student: nn.Module, source: nn.Module) -> None:
    """Raise a clear error unless the frozen base weights of the LoRA `student` equal the source model's backbone
    (the LoRA teacher has no weights of its own: it is only the source model if the base is)."""
    source_params = dict(adapter.backbone_named_parameters(source))
    base = {}
    for name, p in adapter.backbone_named_parameters(student):
        if not any(part.startswith("lora_") for part in name.split(".")):
            base[name.replace(".base_layer.", ".")] = p
    if base.keys() != source_params.keys():
        diff = sorted(base.keys() ^ source_params.keys())[:3]
        raise ValueError(f"The LoRA student's base model differs from the source model (e.g. {diff}).")
    different = [n for n, p in base.items() if not torch.equal(p.detach().cpu(), source_params[n].detach().cpu())]
    if different:
        raise ValueError(
            f"The LoRA student's frozen base weights differ from the source model's (e.g. {different[:3]}): the "
            "teacher shares the student's base, so pass the checkpoint the student was loaded from as `teacher_model`."
        )


def _adapter_tensors(model: nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """name -> parameter of every tensor of adapter `adapter_name` (LoRA A, B, DoRA magnitudes...) in `model`, the
    `modules_to_save` copies of the heads excluded."""
    found = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        if adapter_name in parts and "modules_to_save" not in parts:
            found[name] = p
    return found


def _renamed(name: str, old: str, new: str) -> str:
    return ".".join(new if part == old else part for part in name.split("."))


class _TeacherView(nn.Module):
    """The shared model as the teacher sees it: calling it runs the model in the teacher's mode (see
    [`LoraEmaTeacher.teacher_mode`]). `module` is the underlying `transformers` model (not a registered submodule,
    so that the teacher's `state_dict` does not contain the model)."""

    def __init__(self, teacher: LoraEmaTeacher, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "module", model)
        object.__setattr__(self, "_teacher", teacher)

    def forward(self, *args, **kwargs):
        with self._teacher.teacher_mode():
            return self.module(*args, **kwargs)


class LoraEmaTeacher(Teacher):
    """The SMILE teacher of a LoRA student: the student's frozen base with its own (EMA) adapter.

    A [`Teacher`], as [`EmaTeacher`]: `teacher(pixel_values, output_hidden_states=..., mix=...)`, `update(student)`,
    `should_update(step)`, `state_dict()` / `load_state_dict()`, `model` (the shared model in teacher mode, for
    methods that run the source model themselves), `adapter`, `num_updates`.

    Args:
        student (`PeftModel`): the LoRA student (possibly wrapped by DDP); its active adapter is followed.
        adapter (`BackboneAdapter`): the adapter of the model family.
        source_head (`nn.Linear`): the source classifier; a frozen copy is kept.
        decay (`float`): EMA decay; 1 means a fixed teacher, which then runs the base with the adapters switched off.
        update_every (`int`): optimizer steps between two updates.
        include_buffers (`bool`): also average the floating-point buffers (the teacher's copy towards the model's).
        autocast (`Callable[[], AbstractContextManager]`, *optional*): the mixed-precision context of the forward.
    """

    def __init__(
        self,
        student: nn.Module,
        adapter: BackboneAdapter,
        source_head: nn.Linear,
        decay: float = 0.999,
        update_every: int = 10,
        include_buffers: bool = False,
        autocast: Callable[[], AbstractContextManager] | None = None,
    ):
        super().__init__(adapter, decay, update_every, include_buffers, autocast)
        peft_model = peft_model_of(student)
        if peft_model is None:
            raise ValueError("LoraEmaTeacher needs a peft PeftModel student.")
        base = peft_model.get_base_model()
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "model", _TeacherView(self, base))
        self.student_adapter_name = peft_model.active_adapters[0]
        self.source_head = copy.deepcopy(source_head).requires_grad_(False)
        self.adapter_name = TEACHER_ADAPTER_NAME if decay < 1.0 else None
        if self.adapter_name is not None:
            self._add_teacher_adapter(peft_model)
        self.source_buffers = {
            n: b.detach().clone() for n, b in adapter.backbone_named_buffers(base) if b.is_floating_point()
        }
        self.source_head.eval()

    def _add_teacher_adapter(self, peft_model: nn.Module) -> None:
        """Add the teacher adapter as a frozen copy of the student's, leaving every other `requires_grad` flag and the
        active adapter as they were (peft's `add_adapter` changes both)."""
        if TEACHER_ADAPTER_NAME in peft_model.peft_config:
            raise ValueError(f"The PeftModel already has an adapter named '{TEACHER_ADAPTER_NAME}'.")
        flags = {p: p.requires_grad for p in peft_model.parameters()}
        config = copy.deepcopy(peft_model.peft_config[self.student_adapter_name])
        config.modules_to_save, config.inference_mode = None, True
        peft_model.add_adapter(TEACHER_ADAPTER_NAME, config)
        for layer in self._tuner_layers():
            layer.set_adapter(self.student_adapter_name)
        for p in peft_model.parameters():
            p.requires_grad_(flags.get(p, False))
        with torch.no_grad():
            for teacher, student in self._pairs(self._base):
                teacher.copy_(student)
        if any(n.split(".")[-2:-1] == [self.student_adapter_name] and "lora_B" in n and p.any() for n, p in
               self._base.named_parameters()):  # fmt: skip
            logger.warning("The student's adapter is not at its initialisation: the teacher starts from it.")

    def _tuner_layers(self) -> Iterator[nn.Module]:
        """The peft adapter layers (LoRA...), not the `modules_to_save` wrappers of the heads."""
        require_peft()
        return peft_tuner_layers(self._base)

    def _pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(teacher tensor, student tensor) for every tensor of the teacher adapter."""
        student = _adapter_tensors(model, self.student_adapter_name)
        teacher = _adapter_tensors(model, self.adapter_name)
        names = {n: _renamed(n, self.adapter_name, self.student_adapter_name) for n in teacher}
        missing = [n for n in names.values() if n not in student]
        if missing or len(teacher) != len(student):
            raise ValueError(f"Teacher and student adapters differ (e.g. the student has no {missing[:3]}).")
        return [(teacher[n], student[names[n]]) for n in sorted(teacher)]

    @contextlib.contextmanager
    def teacher_mode(self):
        """Within the context the shared model is the teacher: LoRA layers on the teacher adapter (or off), every
        module in eval mode, the teacher's buffers in place. Everything is restored on exit."""
        modes = [(m, m.training) for m in self._base.modules()]
        swapped = []
        with switch_adapters(list(self._tuner_layers()), self.adapter_name):
            try:
                self._base.eval()
                for name, tensor in self.source_buffers.items():
                    module_name, _, buffer_name = name.rpartition(".")
                    module = self._base.base_model.get_submodule(module_name)
                    swapped.append((module, buffer_name, getattr(module, buffer_name)))
                    setattr(module, buffer_name, tensor)  # a tensor set on a buffer's name replaces the buffer
                yield
            finally:
                for module, buffer_name, tensor in swapped:
                    setattr(module, buffer_name, tensor)
                for module, mode in modes:
                    module.training = mode

    @torch.no_grad()
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, mix: Mix | None = None
    ) -> ForwardOutput:
        """Source logits (the frozen source head on the teacher's pooled feature) and feature maps of the images
        (mixed by `mix` if given), without autograd state, under `autocast`."""
        with self.autocast():
            out = self.adapter.forward(
                self.model, pixel_values, source_head=self.source_head, output_hidden_states=output_hidden_states, mix=mix
            )
        return ForwardOutput(
            out.source_logits, out.feature_map, out.pooled, hidden_maps=out.hidden_maps, attention_mask=out.attention_mask
        )

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step of the teacher adapter (and buffers) towards the student's: lerp(teacher, student, 1 - d)."""
        if self.adapter_name is None:
            raise RuntimeError("A fixed LoRA teacher (decay 1) has no adapter to update.")
        inner = unwrap_model(student)
        if inner is not self._base:
            raise ValueError("The LoRA teacher follows the student it shares its base with, not another model.")
        teacher_tensors, student_tensors = map(list, zip(*self._pairs(inner)))
        if self.include_buffers:
            current = dict(self.adapter.backbone_named_buffers(inner))
            teacher_tensors += list(self.source_buffers.values())
            student_tensors += [current[n] for n in self.source_buffers]
        torch._foreach_lerp_(teacher_tensors, [s.to(t.dtype) for t, s in zip(teacher_tensors, student_tensors)],
                             1.0 - self.decay)  # fmt: skip
        self.num_updates += 1

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """`num_updates`, `source_head.*`, `adapter.<parameter name>` (the teacher adapter's tensors, named as in
        the model) and `buffers.<buffer name>` (the teacher's copy of the base model's buffers)."""
        state = {"num_updates": self.num_updates}
        state.update({f"source_head.{k}": v for k, v in self.source_head.state_dict().items()})
        if self.adapter_name is not None:
            state.update({f"adapter.{n}": p for n, p in _adapter_tensors(self._base, self.adapter_name).items()})
        state.update({f"buffers.{n}": b for n, b in self.source_buffers.items()})
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy a `state_dict()` into the teacher (in place: the adapter tensors stay those of the model)."""
        own = self.state_dict()
        if own.keys() != state_dict.keys():
            diff = sorted(own.keys() ^ state_dict.keys())[:3]
            raise ValueError(f"The saved LoRA teacher does not match this one (e.g. {diff}).")
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_(state_dict[name])


def base_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The buffers of a LoRA student's base model (BatchNorm running statistics and counters), by name; empty for
    a model that is not a `PeftModel`. Training-mode forward passes update them although the base weights are frozen,
    and PEFT's adapter checkpoints do not hold them, so [`SmileTrainer`] saves them in `method_state.safetensors`
    (`base_buffers.*`) for an exact resume."""
    if peft_model_of(model) is None:
        return {}
    return dict(unwrap_model(model).base_model.named_buffers())


def load_base_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy what [`base_buffers`] returned back into the model, in place (strictly: the same names)."""
    own = base_buffers(model)
    if own.keys() != state.keys():
        raise ValueError(f"The saved base buffers do not match the model (e.g. {sorted(own.keys() ^ state.keys())[:3]}).")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(state[name])


def save_adapter(trainer, output_dir: str, warn: bool = True) -> None:
    """Write the student's adapter alone (with its trained head), its PEFT model card naming the base model, and the
    image processor; the teacher adapter is left out. This is what `SmileTrainer.save_model` writes for a LoRA
    student. A base with BatchNorm layers has running statistics that training changed and the adapter format cannot
    hold: for such models (ResNet, ConvNeXt...) export the merged model instead (with `warn`, a warning says so;
    checkpoints, which keep those statistics in `method_state.safetensors`, pass `warn=False`)."""
    peft_model = peft_model_of(trainer.model)
    if warn and any(b.is_floating_point() for b in base_buffers(peft_model).values()):
        logger.warning(
            "The adapter alone does not hold the base model's BatchNorm running statistics, which training updated: "
            "loaded on the original base it will not reproduce the student. Use `save_merged` for this model."
        )
    student_adapters = [name for name in peft_model.peft_config if name != TEACHER_ADAPTER_NAME]
    base_name = peft_model.get_base_model().config.name_or_path
    for name in student_adapters:  # the card and adapter_config.json name the base model
        config = peft_model.peft_config[name]
        config.base_model_name_or_path = config.base_model_name_or_path or base_name or None
    peft_model.save_pretrained(output_dir, selected_adapters=student_adapters)
    save_processor(trainer, output_dir)


def save_merged(trainer, output_dir: str) -> None:
    """Write the student with its adapter merged into the base weights: a plain `transformers` checkpoint of the
    model's class, loadable by `pipeline("image-classification")` (training-only heads left out). The merge runs on a
    CPU copy, so the trainer's model is left as it was (this costs one copy of the model in CPU memory)."""
    peft_model = copy.deepcopy(peft_model_of(trainer.model)).to("cpu")
    if TEACHER_ADAPTER_NAME in peft_model.peft_config:
        peft_model.delete_adapter(TEACHER_ADAPTER_NAME)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(output_dir)
    save_processor(trainer, output_dir)


def save_processor(trainer, output_dir: str) -> None:
    """Write the trainer's image processor (if it has one) into `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    if trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(output_dir)


def build_teacher(student: nn.Module, adapter: BackboneAdapter, source_model: nn.Module, **options) -> Teacher:
    """The teacher of `student`: for a LoRA student ([`peft_model_of`]) an adapter on its frozen base with a copy of
    the source head ([`LoraEmaTeacher`]), else a full copy of the source model, fixed with `decay=1`
    ([`FixedTeacher`]) or following the student ([`EmaTeacher`]). `options` are the teachers' own (`decay`,
    `update_every`, `include_buffers`, `autocast`, and for a full copy `fold_batchnorm`, `forward_dtype`,
    `forward_channels_last`)."""
    if peft_model_of(student) is not None:
        if options.pop("forward_dtype", None) is not None:
            raise ValueError("teacher_bf16 needs a teacher that is a full copy of the source model; a LoRA teacher "
                             "runs the student's own base: set teacher_bf16=False.")  # fmt: skip
        for name in ("fold_batchnorm", "forward_channels_last"):  # the LoRA teacher runs the student's own modules
            options.pop(name, None)
        return LoraEmaTeacher(student, adapter, adapter.head(source_model), **options)
    if options.get("decay", 0.0) >= 1.0:
        copy_options = {k: v for k, v in options.items() if k not in ("decay", "update_every", "include_buffers")}
        return FixedTeacher(source_model, adapter, **copy_options)
    return EmaTeacher(source_model, adapter, **options)
