# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Containers of a regulariser's tensors held as registered buffers, so that they move with `Module.to` and are saved
by `state_dict()` under their own names: [`BufferDict`] (tensors by dotted name, e.g. L2-SP's starting point by
parameter name) and [`BufferList`] (e.g. DELTA's attention, one tensor per layer).

A state computed once (DELTA's attention, Co-Tuning's relationship) does not exist in a fresh regulariser, yet a
resumed run must restore it: [`CreatesSavedBuffers`] is the one place where `load_state_dict` creates the saved
tensors a module does not hold yet (with their shapes and dtypes) before the strict, in-place `nn.Module` loading
fills them. Regularisers ([`Regularizer`]: buffers registered as `None`), [`BufferDict`] and [`BufferList`]
(created empty) say which saved tensors they lack and how each is created.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn


class CreatesSavedBuffers(nn.Module):
    """An `nn.Module` whose `load_state_dict` first creates the saved buffers it does not hold yet, then loads every
    tensor strictly and in place. Subclasses say which saved tensors are missing (`missing_buffers`) and how one is
    created (`create_buffer`)."""

    def missing_buffers(self, saved: dict[str, torch.Tensor]) -> list[str]:
        """The names, in creation order, of the tensors of `saved` (this module's entries of a state dict, names
        relative to it) that this module must create before loading."""
        return []

    def create_buffer(self, name: str, tensor: torch.Tensor) -> None:
        """Hold `tensor` (empty, shaped and typed as the saved one) under `name`."""
        self._buffers[name] = tensor

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        for name in self.missing_buffers(saved):
            self.create_buffer(name, torch.empty_like(saved[name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _holds_buffers(module: nn.Module) -> bool:
    return any(True for _ in module.buffers())


class BufferDict(CreatesSavedBuffers):
    """Tensors by name, each a buffer; a dotted name (`encoder.layer.0.weight`) is held by nested modules, so that
    `state_dict()` keys are the names themselves. Read it like a dict (`[name]`, `keys`, `values`, `items`, `len`).

    Args:
        tensors (`Mapping[str, Tensor]`, *optional*): the initial tensors.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        for name, tensor in (tensors or {}).items():
            self[name] = tensor

    def __setitem__(self, name: str, tensor: torch.Tensor) -> None:
        *path, leaf = name.split(".")
        module: nn.Module = self
        for part in path:
            if part not in module._modules:
                module._modules[part] = nn.Module()  # `add_module` refuses names of Module attributes ("type"...)
            module = module._modules[part]
        module._buffers[leaf] = tensor

    def __getitem__(self, name: str) -> torch.Tensor:
        *path, leaf = name.split(".")
        module: nn.Module = self
        for part in path:
            module = module._modules[part]
        return module._buffers[leaf]

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.named_buffers())

    def keys(self):
        return dict(self.named_buffers()).keys()

    def values(self) -> Iterator[torch.Tensor]:
        return iter(self.buffers())

    def __len__(self) -> int:
        return sum(1 for _ in self.buffers())

    def missing_buffers(self, saved: dict[str, torch.Tensor]) -> list[str]:
        """Every saved tensor when the dict is empty (a filled one is loaded as it is)."""
        return [] if _holds_buffers(self) else list(saved)

    def create_buffer(self, name: str, tensor: torch.Tensor) -> None:
        self[name] = tensor


class BufferList(CreatesSavedBuffers):
    """Tensors in order, buffers named `0`, `1`...; read it like a list (`[j]`, iteration, `len`).

    Args:
        tensors (`Iterable[Tensor]`, *optional*): the initial tensors.
    """

    def __init__(self, tensors=()):
        super().__init__()
        for tensor in tensors:
            self.append(tensor)

    def append(self, tensor: torch.Tensor) -> None:
        self.register_buffer(str(len(self._buffers)), tensor)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._buffers[str(range(len(self))[index])]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._buffers.values())

    def __len__(self) -> int:
        return len(self._buffers)

    def missing_buffers(self, saved: dict[str, torch.Tensor]) -> list[str]:
        """Every saved tensor, in index order, when the list is empty (a filled one is loaded as it is)."""
        if _holds_buffers(self):
            return []
        if sorted(saved) != sorted(map(str, range(len(saved)))):
            raise ValueError(f"The saved tensors of a BufferList are not numbered 0, 1...: {sorted(saved)}.")
        return [str(index) for index in range(len(saved))]

    def create_buffer(self, name: str, tensor: torch.Tensor) -> None:
        self.append(tensor)
