# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Peak memory of one optimizer step: what the stepper holds between steps (its own tensors) plus the peak of what the
step allocates on top (on CUDA the allocator's peak above what was allocated before the step; on the CPU tracked by a
dispatch mode)."""

from __future__ import annotations

import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .stepping import SteppedTrainer


class PeakTensorMemory(TorchDispatchMode):
    """Tracks the bytes of the tensor storages created while active (outputs of every op, forward and backward),
    and their peak. A storage counts from its creation until it is freed. An output that shares the storage of one
    of the op's inputs (a view such as the `t()` of a weight in `linear`, or an in-place op such as the optimizer's
    `add_` on a parameter) allocates nothing and is not counted: counting it would add the parameters (and momentum
    buffers) the step touches to its peak, although they are already in the memory held between steps."""

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = (storage.data_ptr(), id(storage))
                if storage.data_ptr() == 0 or storage.data_ptr() in inputs or key in self.live:
                    continue
                self.live[key] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
        return out


def storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def peak_step_memory(stepper: SteppedTrainer) -> dict[str, float]:
    """Peak memory (MiB) of one optimizer step, after one warm-up step (so the optimizer state exists): `held_mib`,
    the stepper's own tensors held between steps (`static_storages`), plus `step_peak_mib`, the peak of what the step
    allocates, gives `peak_mib`. On CUDA the step's peak is the allocator's peak above what was allocated before the
    step, and not the allocator's totals: those would count the other steppers alive in the process too."""
    stepper.step()
    gc.collect()
    held = storage_bytes(stepper.static_storages())
    if stepper.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        stepper.step()
        torch.cuda.synchronize()
        step_peak = torch.cuda.max_memory_allocated() - before
    else:
        with PeakTensorMemory() as tracker:
            stepper.step()
        step_peak = tracker.peak
    return {"held_mib": held / 2**20, "step_peak_mib": step_peak / 2**20, "peak_mib": (held + step_peak) / 2**20}
