# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Keeping the processes of a multi-process run identical where DDP does not.

DDP all-reduces gradients, so parameters stay identical, and (with `broadcast_buffers=True`) copies rank 0's buffers
to the others *before* each forward pass; the BatchNorm running statistics updated *by* the last forward pass are
therefore each rank's own. Evaluation and saving after training would then use per-rank statistics, and an EMA
teacher that also averages buffers (`ema_buffers=True`) would drift apart across ranks.
[`SyncBuffersCallback`] averages the floating-point buffers of the model over the processes after every optimizer
step (the approach of timm's `distribute_bn(reduce=True)`, there once per epoch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from transformers import TrainerCallback

from .backbones import unwrap_model


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Replace every floating-point buffer of `model` by its mean over the processes (no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    buffers = [b for b in unwrap_model(model).buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1).to(torch.float64) for b in buffers])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


class SyncBuffersCallback(TrainerCallback):
    """Average the model's floating-point buffers (BatchNorm running statistics) over the processes after every
    optimizer step, before the other callbacks of that step (e.g. the EMA teacher update) see them.

    Add it first: `trainer.callback_handler.callbacks.insert(0, SyncBuffersCallback())`, or with
    [`add_buffer_sync`].
    """

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            average_buffers(model)


def shutdown() -> None:
    """Destroy the default process group, if one was initialized, so that every rank exits cleanly (without it, a
    rank can abort at interpreter exit while gloo's threads are still alive: "terminate called without an active
    exception"). Call it at the end of a multi-process script."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def add_buffer_sync(trainer) -> None:
    """Put a [`SyncBuffersCallback`] at the front of `trainer`'s callbacks (only useful with several processes)."""
    trainer.callback_handler.callbacks.insert(0, SyncBuffersCallback())


__all__ = ["SyncBuffersCallback", "add_buffer_sync", "average_buffers", "shutdown"]
