# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Full fine-tuning under FSDP2 (`torch.distributed.fsdp.fully_shard`): the student and its teacher sharded alike,
and checkpoints of sharded state.

- [`shard_model`] shards a model as smile_hf does in a plain loop: each backbone stage, then the whole model, every
  group resharded after its forward pass (so that parameters are shards whenever the loss terms, the EMA and the
  checkpoints read them).
- [`shard_teacher`] builds the teacher from a *separately loaded* source model (a deep copy of a sharded model
  would copy empty shards, and `fully_shard` refuses `deepcopy`), in float32 (the EMA shadow: bfloat16 increments
  round to zero), sharded with the student's mesh and mixed-precision policy, in eval mode.
  [`prepare_teacher_model`] does the same through Accelerate's FSDP2 plugin (what [`SmileTrainer`] uses).
- The EMA update ([`EmaTeacher.update`]) runs on each rank's local shards; the regularisers' sums over parameters
  (L2-SP's distance to the starting point, the head penalties) are all-reduced so that every rank holds the
  unsharded value (see [`smile_hf.shards`]).
- [`save_sharded_checkpoint`] / [`load_sharded_checkpoint`] write and read student, optimizer, teacher and method
  state with `torch.distributed.checkpoint` (each rank its shards), then a marker ([`SHARDED_MARKER_NAME`]) last;
  [`check_checkpoint_sharding`] refuses, in one line, a checkpoint written under the other setting (DDP or FSDP2).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from .backbones import BackboneAdapter, unwrap_model
from .checkpoints import COMPLETE_MARKER_NAME, IncompleteCheckpointError
from .guard import check_finite_tensors
from .lora import build_teacher
from .methods import Regularizer
from .sharding import is_fsdp2
from .teacher import Teacher

SHARDED_MARKER_NAME = "sharded_checkpoint.json"
"""Last file of a checkpoint written by [`save_sharded_checkpoint`]: its format, sharding and world size."""
SHARDING_FIELD = "sharding"
"""Field of a checkpoint's marker naming how it was sharded (`"fsdp2"`); absent for a DDP (unsharded) checkpoint."""
FSDP2 = "fsdp2"
SHARDED_STATE_DIR = "sharded_state"
"""Folder of a checkpoint holding the `torch.distributed.checkpoint` files of the sharded state."""


def shard_model(
    model: nn.Module,
    adapter: BackboneAdapter,
    mesh=None,
    mp_policy: MixedPrecisionPolicy | None = None,
) -> nn.Module:
    """Shard `model` in place with `fully_shard`: each backbone stage (`adapter.stages`), then the whole model, with
    `reshard_after_forward=True` for every group, the root's included (so that between forward passes every
    parameter is a `DTensor` shard).

    Args:
        model (`nn.Module`): the model (student or source model), unsharded.
        adapter (`BackboneAdapter`): the adapter of its family.
        mesh (`DeviceMesh`, *optional*): a one-dimensional mesh; defaults to all the processes of the default group.
        mp_policy (`MixedPrecisionPolicy`, *optional*): the mixed-precision policy; defaults to none.

    Returns:
        `nn.Module`: `model`, now an `FSDPModule`.
    """
    policy = mp_policy or MixedPrecisionPolicy()
    for stage in adapter.stages(model):
        fully_shard(stage, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    return model


def sharding_of(model: nn.Module) -> tuple[Any, MixedPrecisionPolicy]:
    """(mesh, mixed-precision policy) of a model sharded with `fully_shard` (the root group's)."""
    inner = unwrap_model(model)
    if not isinstance(inner, FSDPModule):
        raise ValueError("The student is not sharded with `fully_shard` (FSDP2): shard it before its teacher.")
    group = inner._get_fsdp_state()._fsdp_param_group
    return group.mesh_info.mesh, group.mp_policy


def _as_frozen_float32(source_model: nn.Module) -> nn.Module:
    """The source model frozen, in eval mode, its floating-point tensors in float32 (the EMA shadow)."""
    if any(isinstance(p, torch.distributed.tensor.DTensor) for p in source_model.parameters()):
        raise ValueError(
            "The teacher must be built from a separately loaded source model, not from a sharded one (a copy of a "
            "sharded model copies empty shards): load the source checkpoint again."
        )
    return source_model.to(torch.float32).eval().requires_grad_(False)


def shard_teacher(student: nn.Module, adapter: BackboneAdapter, source_model: nn.Module, **options) -> Teacher:
    """The teacher of a student sharded with [`shard_model`]: `source_model` (loaded from the source checkpoint, not
    copied from the student) in float32, sharded with the student's mesh and mixed-precision policy
    ([`sharding_of`]), as an [`EmaTeacher`] (or a [`FixedTeacher`] with `decay=1`) whose EMA update runs on the local
    shards. `options` are the teachers' own ([`Teacher`]: `decay`, `update_every`, `include_buffers`, `autocast`), as
    for [`smile_hf.lora.build_teacher`]."""
    mesh, policy = sharding_of(student)
    model = shard_model(_as_frozen_float32(source_model), adapter, mesh=mesh, mp_policy=policy)
    return build_teacher(student, adapter, model, **options)


def prepare_teacher_model(accelerator, source_model: nn.Module) -> nn.Module:
    """`source_model` in float32, frozen, sharded by Accelerate's FSDP2 plugin (`fsdp2_prepare_model`: the student's
    mesh, wrap policy and mixed precision) and resharded after every forward pass (a root group otherwise keeps its
    parameters gathered after a forward pass with no backward)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    model = fsdp2_prepare_model(accelerator, _as_frozen_float32(source_model))
    model.set_reshard_after_forward(True)
    return model.eval().requires_grad_(False)


# ---- checkpoints ----------------------------------------------------------------------------------------------


def _training_state(model: nn.Module, optimizer, teacher: Teacher | None, regularizer: Regularizer | None) -> dict:
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    if teacher is not None:
        state["teacher"] = teacher.state_dict()
    if regularizer is not None:
        state["method"] = regularizer.state_dict()
    return state


def save_sharded_checkpoint(
    folder: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    teacher: Teacher | None = None,
    regularizer: Regularizer | None = None,
    step: int = 0,
) -> None:
    """Write the sharded training state into `folder` (every rank calls it): student, optimizer, teacher (with its
    EMA counter) and regulariser state through `torch.distributed.checkpoint` (each rank writes its shards into
    [`SHARDED_STATE_DIR`]), then, once every rank is done, [`SHARDED_MARKER_NAME`] (written atomically by rank 0).
    A folder without the marker is an interrupted save."""
    state = _training_state(model, optimizer, teacher, regularizer)
    state["step"] = torch.tensor(step)
    dcp.save(state, checkpoint_id=os.path.join(folder, SHARDED_STATE_DIR))
    dist.barrier()
    if dist.get_rank() == 0:
        marker = {
            "format": "smile_hf.sharded",
            SHARDING_FIELD: FSDP2,
            "world_size": dist.get_world_size(),
            "step": step,
        }
        tmp = os.path.join(folder, f".{SHARDED_MARKER_NAME}.tmp")
        with open(tmp, "w") as f:
            json.dump(marker, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, SHARDED_MARKER_NAME))
    dist.barrier()


def load_sharded_checkpoint(
    folder: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    teacher: Teacher | None = None,
    regularizer: Regularizer | None = None,
) -> int:
    """Restore, in place, what [`save_sharded_checkpoint`] wrote into `folder` (every rank calls it, with the model
    sharded and the regulariser set up as when it was saved). The checkpoint may have been written by another number
    of processes (`torch.distributed.checkpoint` reshards). Returns the step it was written at.

    Raises:
        [`IncompleteCheckpointError`]: one line, for a folder that is not a complete FSDP2 checkpoint (an
            interrupted save, or a DDP checkpoint).
    """
    check_checkpoint_sharding(folder, sharded=True)
    state = _training_state(model, optimizer, teacher, regularizer)
    state["step"] = torch.tensor(0)
    dcp.load(state, checkpoint_id=os.path.join(folder, SHARDED_STATE_DIR))
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(strict=True))
    if teacher is not None:
        teacher.load_state_dict(state["teacher"])
    if regularizer is not None:
        regularizer.load_state_dict(state["method"])
    return int(state["step"])


def checkpoint_sharding(folder: str) -> str | None:
    """How the checkpoint in `folder` was sharded: `"fsdp2"` (its marker, [`SHARDED_MARKER_NAME`] or a Trainer
    checkpoint's `checkpoint_complete.json`, says so), or None (a DDP or single-process checkpoint)."""
    for name in (SHARDED_MARKER_NAME, COMPLETE_MARKER_NAME):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path) as f:
                sharding = json.load(f).get(SHARDING_FIELD)
            if sharding is not None:
                return sharding
    return None


def check_checkpoint_sharding(folder: str, sharded: bool) -> None:
    """Raise [`IncompleteCheckpointError`] (one line) when the checkpoint in `folder` was written under the other
    setting: a DDP (unsharded) checkpoint loaded under FSDP2 (`sharded=True`) or an FSDP2 one loaded without it."""
    written = checkpoint_sharding(folder)
    if sharded and written != FSDP2:
        raise IncompleteCheckpointError(
            f"Cannot resume from {folder} under FSDP2: it is not a complete FSDP2 checkpoint (written without FSDP, "
            "e.g. by DDP, or an interrupted save). Resume it with the setting that wrote it (DDP), or start again."
        )
    if not sharded and written is not None:
        raise IncompleteCheckpointError(
            f"Cannot resume from {folder} without FSDP: it was written under {written.upper()} (sharded state). "
            "Resume it under FSDP2 (`accelerate launch --use_fsdp --fsdp_version 2 ...`), or start again."
        )


# ---- SmileTrainer under Accelerate's FSDP2 plugin -------------------------------------------------------------


class ShardedMethodStateMixin:
    """Mixin of [`SmileTrainer`] (listed before [`MethodStateMixin`]): under FSDP2 ([`is_fsdp2`]) the method state
    (teacher, auxiliary head, regulariser state) of each checkpoint is written sharded, by every rank, with
    `torch.distributed.checkpoint` into [`SHARDED_STATE_DIR`] (beside the Trainer's own sharded model and optimizer),
    and the completion marker says `"sharding": "fsdp2"`. A checkpoint is resumed only under the setting that wrote
    it ([`check_checkpoint_sharding`]). Without FSDP2 nothing changes (`method_state.safetensors`)."""

    def extra_checkpoint_files(self) -> dict:
        return {} if is_fsdp2(self) else super().extra_checkpoint_files()

    def checkpoint_marker_fields(self) -> dict[str, str]:
        fields = super().checkpoint_marker_fields()
        return {**fields, SHARDING_FIELD: FSDP2} if is_fsdp2(self) else fields

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if is_fsdp2(self):  # every rank writes its shards
            dcp.save(self._method_state_tensors(), checkpoint_id=os.path.join(output_dir, SHARDED_STATE_DIR))

    def _load_method_state(self, checkpoint_dir: str, refusal: str = "Cannot resume from") -> None:
        check_checkpoint_sharding(checkpoint_dir, sharded=is_fsdp2(self))
        if not is_fsdp2(self):
            return super()._load_method_state(checkpoint_dir, refusal)
        try:  # in place, into the tensors the trainer holds (shards, or whole where not sharded)
            dcp.load(self._method_state_tensors(), checkpoint_id=os.path.join(checkpoint_dir, SHARDED_STATE_DIR))
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            message = " ".join(str(error).split()) or type(error).__name__
            raise IncompleteCheckpointError(
                f"{refusal} {checkpoint_dir}: its sharded method state ({SHARDED_STATE_DIR}) cannot be loaded: "
                f"{message[:300]} (was it written by another version or method?)."
            ) from error


def save_full_model(trainer, output_dir: str) -> None:
    """Save the student of a [`SmileTrainer`] training under FSDP2 as one full model (every rank calls it: the shards
    are gathered to the main process, which writes them), without the teacher or the training-only heads, after
    checking that the gathered weights are finite."""
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if not trainer.args.should_save:
        return
    check_finite_tensors(list(state_dict.items()), output_dir)
    trainer._save(output_dir, state_dict=state_dict)


__all__ = [
    "FSDP2", "SHARDED_MARKER_NAME", "SHARDED_STATE_DIR", "SHARDING_FIELD", "check_checkpoint_sharding",
    "checkpoint_sharding", "load_sharded_checkpoint", "prepare_teacher_model", "save_sharded_checkpoint",
    "save_full_model", "shard_model", "shard_teacher", "sharding_of", "ShardedMethodStateMixin",
]  # fmt: skip
