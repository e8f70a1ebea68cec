# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The method state: what [`SmileTrainer`] trains or keeps for its method beyond the student, which the stock
`Trainer` does not checkpoint (source head, teacher with its EMA counter, the regulariser's state, LoRA base buffers).
Written into every checkpoint as `method_state.safetensors` ([`METHOD_STATE_NAME`]), restored on resume and with
`load_best_model_at_end`. Checkpoints written before the file had this name hold it as `smile_state.safetensors`
([`FORMER_METHOD_STATE_NAMES`]), which is read as well.

Loading is strict: the file must hold exactly the keys this trainer's method state has, each with its shape and
dtype (a regulariser's state computed once may also hold the tensors it creates when loaded). Anything else (a file
written by another version or method, or edited) is an [`IncompleteCheckpointError`], one line naming the
checkpoint, the file and the key."""

from __future__ import annotations

import os

import safetensors
import safetensors.torch
import torch
from torch import nn

from .backbones import SOURCE_HEAD_NAME, unwrap_model
from .checkpoints import IncompleteCheckpointError
from .lora import base_buffers, load_base_buffers
from .methods import parse_method

METHOD_STATE_NAME = "method_state.safetensors"
"""File, in each Trainer checkpoint, holding the method state (the state the stock Trainer does not know about)."""

FORMER_METHOD_STATE_NAMES = ("smile_state.safetensors",)
"""Earlier names of [`METHOD_STATE_NAME`], read from the checkpoints written under them."""


def method_state_path(checkpoint_dir: str) -> str | None:
    """The method-state file of a checkpoint folder: [`METHOD_STATE_NAME`], else a former name
    ([`FORMER_METHOD_STATE_NAMES`]); None when it has neither."""
    for name in (METHOD_STATE_NAME, *FORMER_METHOD_STATE_NAMES):
        path = os.path.join(checkpoint_dir, name)
        if os.path.isfile(path):
            return path
    return None


def _first(keys) -> str:
    """The first of `keys` (sorted), quoted, and how many others there are."""
    keys = sorted(keys)
    return f"'{keys[0]}'" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")


def state_mismatch(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   created_on_load: str = "method.") -> str | None:  # fmt: skip
    """How the tensors of `saved` differ from those of `expected` (a missing key, an unexpected one, another shape or
    dtype), or None. Keys under `created_on_load` may be in `saved` only (a regulariser creates them when loading)."""
    missing = expected.keys() - saved.keys()
    if missing:
        return f"lacks the key {_first(missing)}"
    unexpected = {k for k in saved.keys() - expected.keys() if not k.startswith(created_on_load)}
    if unexpected:
        return f"has the unexpected key {_first(unexpected)}"
    for key in sorted(expected):
        have, want = saved[key], expected[key]
        if have.shape != want.shape:
            return f"has the key '{key}' of shape {list(have.shape)} where {list(want.shape)} is expected"
        if have.dtype != want.dtype:
            return f"has the key '{key}' of dtype {have.dtype} where {want.dtype} is expected"
    return None


class MethodStateMixin:
    """Mixin of [`SmileTrainer`] (listed before [`CompleteCheckpointMixin`]): the method state, its save into every
    checkpoint, and its loading on resume and at the end of training (`load_best_model_at_end`)."""

    def method_state_dict(self) -> dict[str, torch.Tensor]:
        """The method state, which the stock Trainer does not checkpoint: source head, teacher, regulariser state.

        Keys are prefixed `source_head.`, `teacher.` (weights, buffers and the EMA counter `teacher.num_updates`)
        and `method.` (the regulariser's buffers; and `base_buffers.` for a LoRA student, see
        [`smile_hf.lora.base_buffers`]); tensors are copied to the CPU (so that tied or shared tensors can go to
        safetensors)."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self._method_state_tensors().items()}

    def _method_state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of [`method_state_dict`], where they live (not copied)."""
        state = {}
        source_head = getattr(unwrap_model(self.model), SOURCE_HEAD_NAME, None)
        if source_head is not None:
            state.update({f"source_head.{k}": v for k, v in source_head.state_dict().items()})
        if self.teacher is not None:
            state.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        state.update({f"method.{k}": v for k, v in self.regularizer.state_dict().items()})
        state.update({f"base_buffers.{k}": v for k, v in base_buffers(self.model).items()})  # LoRA: see lora.py
        return state

    def load_method_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `method_state_dict` returned, strictly: every key this trainer's method state has, with its
        shape and dtype, and no other (`ValueError` naming the first key that differs, nothing loaded)."""

        def part(prefix):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        source_head = getattr(unwrap_model(self.model), SOURCE_HEAD_NAME, None)
        expected = {"method"} | ({"source_head"} if source_head is not None else set())
        expected |= {"teacher"} if self.teacher is not None else set()
        expected |= {"base_buffers"} if base_buffers(self.model) else set()
        found = {k.split(".", 1)[0] for k in state}
        if found - expected or (expected - {"method"}) - found:
            raise ValueError(
                f"The saved method state has parts {sorted(found)} but method '{self.args.method}' needs "
                f"{sorted(expected - {'method'} | (found & {'method'}))}: was the checkpoint written with another method?"
            )
        mismatch = state_mismatch(state, self._method_state_tensors())
        if mismatch is not None:
            raise ValueError(f"the saved method state {mismatch}")
        if source_head is not None:
            source_head.load_state_dict(part("source_head."))
        if self.teacher is not None:
            self.teacher.load_state_dict(part("teacher."))
        loading_error = None
        try:
            self.regularizer.load_state_dict(part("method."))
        except RuntimeError as error:  # a strict `nn.Module` loading refuses unexpected keys; a custom one may not
            loading_error = error
        unexpected = {f"method.{k}" for k in part("method.").keys() - self.regularizer.state_dict().keys()}
        if unexpected:
            raise ValueError(f"the saved method state has the unexpected key {_first(unexpected)}") from loading_error
        if loading_error is not None:
            raise loading_error
        if "base_buffers" in expected:
            load_base_buffers(self.model, part("base_buffers."))

    def extra_checkpoint_files(self) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]]:
        """`method_state.safetensors`: the state of [`method_state_dict`], written into every checkpoint."""
        metadata = {"format": "pt", "method": self.args.method, "global_step": str(self.state.global_step)}
        return {METHOD_STATE_NAME: (self.method_state_dict(), metadata)}

    def checkpoint_marker_fields(self) -> dict[str, str]:
        return {"method": self.args.method}

    def _load_best_model(self) -> None:
        """The stock loading of the best student (`load_best_model_at_end`), then the teacher, source head and method
        state saved in the same checkpoint."""
        super()._load_best_model()
        self._load_method_state(self.state.best_model_checkpoint, "Cannot load the best checkpoint")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """The stock loading of the student, then the method state (`method_state.safetensors`, or its former name).
        Weights that do not fit the student (another shape) are an [`IncompleteCheckpointError`] of one line."""
        try:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        except (ValueError, RuntimeError, safetensors.SafetensorError) as error:
            if isinstance(error, IncompleteCheckpointError) or (
                isinstance(error, RuntimeError) and not str(error).startswith("Error(s) in loading state_dict")
            ):  # not a loading error (e.g. out of memory)
                raise
            raise IncompleteCheckpointError(
                f"Cannot resume from {resume_from_checkpoint}: the student's weights cannot be loaded: "
                f"{_one_line(error)} (was it written by another version or for another model?)."
            ) from error
        self._load_method_state(resume_from_checkpoint)

    def _load_method_state(self, checkpoint_dir: str, refusal: str = "Cannot resume from") -> None:
        """Load the method state of `checkpoint_dir`; any problem is an [`IncompleteCheckpointError`] of one line,
        `<refusal> <checkpoint_dir>: <file> ...`."""
        path = method_state_path(checkpoint_dir)
        if path is None:
            if self._method_state_tensors():
                raise IncompleteCheckpointError(
                    f"{refusal} {checkpoint_dir}: it has no {METHOD_STATE_NAME} (it was not written by a complete "
                    "SmileTrainer checkpoint save), so the teacher and auxiliary head cannot be restored."
                )
            return
        where = f"{refusal} {checkpoint_dir}: {os.path.basename(path)}"
        try:
            with safetensors.safe_open(path, framework="pt") as f:
                written_by = (f.metadata() or {}).get("method")
            state = safetensors.torch.load_file(path, device="cpu")
        except (OSError, safetensors.SafetensorError) as error:
            raise IncompleteCheckpointError(f"{where} cannot be read ({_one_line(error)}).") from error
        if written_by is not None and parse_method(written_by)[0] != self.args.regularizer:
            raise IncompleteCheckpointError(
                f"{checkpoint_dir} was written by method '{written_by}', not '{self.args.method}': resume with the "
                "same method."
            )
        try:
            self.load_method_state_dict(state)
        except (ValueError, RuntimeError, KeyError, TypeError) as error:
            raise IncompleteCheckpointError(
                f"{where} cannot be loaded: {_one_line(error)} (was it written by another version or method?)."
            ) from error


def _one_line(error: BaseException) -> str:
    """The message of `error` on one line (`nn.Module.load_state_dict` lists its problems on several)."""
    return " ".join(str(error).split()) or type(error).__name__
