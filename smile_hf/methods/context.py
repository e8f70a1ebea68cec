# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a regulariser's one-off work sees: a [`RegularizerContext`], provided by [`SmileTrainer.regularizer_context`] or built
by hand in a plain PyTorch loop, and [`for_each_training_batch`], its pass over the training data."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..text import TEXT_INPUT_NAMES

if TYPE_CHECKING:
    from ..backbones import BackboneAdapter


def _unchanged(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


@dataclass
class RegularizerContext:
    """The training setup a regulariser's `setup`, `prepare` and `on_step_end` read.

    Attributes:
        model (`nn.Module`): the student (unwrapped: no DDP or compile wrapper).
        adapter (`BackboneAdapter`): the backbone adapter of the student's family.
        batches (`Callable[[], Iterable]`): returns a fresh pass over the training batches, each a mapping with
            `pixel_values` and `labels` (what a `DataLoader` with [`smile_hf.data.collate`] gives), or with
            `input_ids`, `attention_mask` and `labels` for a text model, or a `(pixel_values, labels)` pair;
            [`for_each_training_batch`] moves them to `device`.
        device (`torch.device`): the training device.
        teacher (`Teacher`, *optional*): the teacher (any [`smile_hf.teacher.Teacher`]), for regularisers with `needs_teacher`.
        reduce (`Callable[[Tensor, str], Tensor]`, *optional*): `reduce(tensor, reduction)` with `reduction` "sum"
            or "mean" over the processes (`Accelerator.reduce`); the identity in one process.
        gather (`Callable[[Tensor], Tensor]`, *optional*): concatenates a tensor of every process along dimension 0
            (`Accelerator.gather`); the identity in one process.
        seed (`int`, defaults to 0): the run's seed, for one-off random draws (DELTA's probe, RIFLE's heads).
        show_progress (`bool`, defaults to `True`): show tqdm bars during one-off passes over the data.
    """

    model: nn.Module
    adapter: BackboneAdapter
    batches: Callable[[], Iterable]
    device: torch.device | str = "cpu"
    teacher: nn.Module | None = None
    reduce: Callable[..., torch.Tensor] = _unchanged
    gather: Callable[[torch.Tensor], torch.Tensor] = _unchanged
    seed: int = 0
    show_progress: bool = True


def as_context(context) -> RegularizerContext:
    """`context` itself, or the [`RegularizerContext`] of a trainer (anything with a `regularizer_context()` method)."""
    return context if isinstance(context, RegularizerContext) else context.regularizer_context()


def _pair(batch) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
    if isinstance(batch, Mapping):
        if "pixel_values" not in batch and "input_ids" in batch:  # a text batch: the model's inputs as a mapping
            return {k: v for k, v in batch.items() if k in TEXT_INPUT_NAMES}, batch["labels"]
        return batch["pixel_values"], batch["labels"]
    pixel_values, labels = batch
    return pixel_values, labels


def inputs_to(inputs, device: torch.device):
    """The model inputs of a batch (images, or the mapping of a text batch) on `device`."""
    if isinstance(inputs, Mapping):
        return {name: value.to(device) for name, value in inputs.items()}
    return inputs.to(device)


def first_inputs(inputs, count: int):
    """The first `count` samples of the model inputs of a batch (images, or the mapping of a text batch)."""
    if isinstance(inputs, Mapping):
        return {name: value[:count] for name, value in inputs.items()}
    return inputs[:count]


def for_each_training_batch(
    context: RegularizerContext, fn: Callable[[torch.Tensor, torch.Tensor], None], max_batches=None, desc: str | None = None
) -> int:
    """Call `fn(pixel_values, labels)` on the batches of one pass of `context.batches()` (at most `max_batches`), on
    the context's device, leaving the global random state as it was; with `desc` (and `context.show_progress`), a
    tqdm progress bar of that name. Returns the number of batches seen."""
    device = torch.device(context.device)
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    seen = 0
    loader = context.batches()
    total = len(loader) if hasattr(loader, "__len__") else None
    total = total if max_batches is None or total is None else min(total, max_batches)
    bar = tqdm(total=total, desc=desc, leave=False, disable=desc is None or not context.show_progress)
    with torch.random.fork_rng(devices=devices), bar:
        for batch in loader:
            if max_batches is not None and seen >= max_batches:
                break
            pixel_values, labels = _pair(batch)
            fn(inputs_to(pixel_values, device), labels.to(device))
            seen += 1
            bar.update(1)
    return seen
