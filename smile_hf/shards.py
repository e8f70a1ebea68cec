# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Tensor arithmetic that gives the unsharded result when the tensors are FSDP2 shards (`DTensor`s placed
`Shard(dim)` on a one-dimensional device mesh, as `torch.distributed.fsdp.fully_shard` leaves parameters between
forward passes), and the plain result on plain tensors.

- [`sum_over_shards`]: a sum over tensors (a squared norm, a squared distance to a starting point) computed on this
  rank's local shards and all-reduced, so that every rank holds the unsharded value; its gradient reaches this rank's
  shards only (each rank's loss holds the whole value, and FSDP2 does not average gradients that reach the sharded
  parameters directly), as the unsharded loss's gradient does.
- [`local_tensors`]: the local shards of tensors, for elementwise in-place work with no communication (the EMA
  teacher's `torch._foreach_lerp_`).
- [`shard_like`]: a full tensor held by every rank, cut into the shard of a reference `DTensor` (no communication).
- [`local_bytes`]: the memory the local shards of a module's parameters and buffers take on this rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

SHARDED_MESH_ERROR = (
    "Only shards on a one-dimensional device mesh (FSDP2's `fully_shard(model, mesh=init_device_mesh(..., (n,)))`) are "
    "supported; HSDP and tensor parallelism (a {ndim}-dimensional mesh) are not."
)


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a `DTensor` cut into shards (a `Shard` placement), as FSDP2 holds parameters."""
    if not isinstance(tensor, DTensor):
        return False
    if tensor.device_mesh.ndim != 1:
        raise ValueError(SHARDED_MESH_ERROR.format(ndim=tensor.device_mesh.ndim))
    return isinstance(tensor.placements[0], Shard)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of `tensor` (`DTensor.to_local()`, which shares its storage), or `tensor` itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def local_tensors(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """[`local_tensor`] of each of `tensors`."""
    return [local_tensor(t) for t in tensors]


def local_pairs(
    targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The local shards of two matched tensor lists (an EMA's shadow and the model it follows, parameters and their
    starting points), which must be sharded alike: elementwise work on the local shards is then the work on the whole
    tensors, with no communication. Raises `ValueError` naming the first pair sharded differently."""
    for index, (target, source) in enumerate(zip(targets, sources)):
        target_placement = getattr(target, "placements", None)
        if target_placement != getattr(source, "placements", None) or target.shape != source.shape:
            raise ValueError(
                f"Tensor {index} is sharded as {target_placement} with shape {list(target.shape)} but its counterpart "
                f"as {getattr(source, 'placements', None)} with shape {list(source.shape)}: shard both alike (a "
                "teacher with the student's mesh and policy, smile_hf.fsdp.shard_teacher, resharded after forward)."
            )
    return local_tensors(targets), local_tensors(sources)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _all_reduced_value(local_sum: torch.Tensor, group) -> torch.Tensor:
    """`local_sum` summed over the ranks of `group` in value; its gradient stays this rank's (no collective in
    backward)."""
    total = local_sum.detach().clone()
    dist.all_reduce(total, group=group)
    return local_sum + (total - local_sum.detach())


def sum_over_shards(fn: Callable[..., torch.Tensor], *columns: Sequence[torch.Tensor]) -> torch.Tensor:
    """`fn(*columns)`, a sum over the rows of `columns` (matched tensor lists, e.g. parameters and their starting
    points), computed as if no tensor were sharded.

    The rows whose first tensor is sharded ([`is_sharded`]) are summed on this rank's local shards (the other columns
    of such a row must be sharded alike) and all-reduced over the mesh; the other rows (plain tensors, replicated or
    unsharded parameters) are summed whole on every rank, a sharded tensor in them gathered (`full_tensor`).

    Args:
        fn (`Callable`): takes one list per column and returns the scalar sum over their rows (a sum of
            per-tensor terms, so that it splits over rows and shards).
        columns (`Sequence[torch.Tensor]`): lists of the same length.

    Returns:
        `torch.Tensor`: the scalar sum, the same on every rank; its gradient is that of the unsharded sum, on this
        rank's shards.
    """
    rows = range(len(columns[0]))
    sharded = [i for i in rows if is_sharded(columns[0][i])]
    if not sharded:
        return fn(*[[_full(c[i]) for i in rows] for c in columns])
    whole = [i for i in rows if i not in set(sharded)]
    first = [columns[0][i] for i in sharded]
    local_columns = [local_pairs(first, [c[i] for i in sharded])[1] for c in columns]
    total = _all_reduced_value(fn(*local_columns), columns[0][sharded[0]].device_mesh.get_group())
    if whole:
        total = total + fn(*[[_full(c[i]) for i in whole] for c in columns])
    return total


def shard_like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`tensor` (a full tensor, the same on every rank) as a `DTensor` placed like `reference`, cut locally with no
    communication; `tensor` itself when `reference` is not a `DTensor` or `tensor` already is one."""
    if not isinstance(reference, DTensor) or isinstance(tensor, DTensor):
        return tensor
    return distribute_tensor(tensor, reference.device_mesh, reference.placements, src_data_rank=None)


def local_bytes(module: nn.Module) -> int:
    """The bytes of this rank's local shards of `module`'s parameters and buffers (whole tensors when unsharded)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(local_tensor(t).numel() * t.element_size() for t in tensors)


__all__ = [
    "is_sharded", "local_bytes", "local_pairs", "local_tensor", "local_tensors", "shard_like", "sum_over_shards",
]  # fmt: skip
