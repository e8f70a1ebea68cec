# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Counting what a training step asks of the host, on any device: the operators that make the host wait for the
accelerator (host syncs), and the operators dispatched (a device-independent proxy for kernel launches).

On CUDA, `torch.cuda.set_sync_debug_mode("error")` catches a sync when it happens; these counters also work on the
CPU, where nothing ever waits, so that a test on a CPU-only machine can still show that a step has no operator that
would make a GPU run wait:

```python
with DispatchCounter() as counter:
    trainer.training_step(model, batch)
assert counter.host_syncs == {}
```
"""

from __future__ import annotations

from collections import Counter

import torch

from ._compat import TorchDispatchMode, operator_name

HOST_SYNC_OPS = frozenset(
    {
        "aten::_local_scalar_dense",  # tensor.item(), bool(tensor), float(tensor), int(tensor)
        "aten::item",
        "aten::index(boolean mask)",
        "aten::nonzero",  # also boolean-mask indexing and torch.where(cond) with one argument
        "aten::nonzero_static",
        "aten::masked_select",
        "aten::unique",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_consecutive",
        "aten::unique_dim",
        "aten::repeat_interleave",  # without output_size
        "aten::_assert_async",
        "aten::_linalg_check_errors",
        "aten::equal",
        "aten::is_nonzero",
        "aten::_linalg_svd",  # on CUDA, linalg decompositions read their error code back
        "aten::_linalg_eigh",
        "aten::linalg_eig",
    }
)
"""Operators that, on an accelerator, wait for its queue to drain: they return a value the host needs (a scalar, a
shape that depends on the data) or check one."""


class DispatchCounter(TorchDispatchMode):
    """Counts every operator dispatched inside the context (after autograd, so backward operators count too).

    Attributes:
        ops (`collections.Counter`): operator name (`"aten::mul"`) -> number of calls.
        host_syncs (`dict`): the subset of `ops` in [`HOST_SYNC_OPS`].
        cross_device_copies (`int`): copies between devices (`aten::_to_copy` / `aten::copy_` whose input and output
            devices differ); a copy from pageable host memory to an accelerator also waits for it.
    """

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.cross_device_copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = operator_name(func)
        if name == "aten::index" and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in (args[1] if len(args) > 1 else ())
        ):
            name = "aten::index(boolean mask)"  # the mask's nonzero() sets the output's shape
        self.ops[name] += 1
        out = func(*args, **kwargs)
        if name in ("aten::_to_copy", "aten::copy_") and args and isinstance(args[0], torch.Tensor):
            source = args[1] if name == "aten::copy_" and len(args) > 1 else args[0]
            target = out if isinstance(out, torch.Tensor) else args[0]
            if isinstance(source, torch.Tensor) and source.device != target.device:
                self.cross_device_copies += 1
        return out

    @property
    def host_syncs(self) -> dict[str, int]:
        return {name: count for name, count in self.ops.items() if name in HOST_SYNC_OPS}

    @property
    def total(self) -> int:
        """The number of operators dispatched."""
        return sum(self.ops.values())
