# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Containers of a regulariser's tensors held as registered buffers, so that they move with `Module.to` and are saved
by `state_dict()` under their own names: [`BufferDict`] (tensors by dotted name, e.g. L2-SP's starting point by
parameter name) and [`BufferList`] (e.g. DELTA's attention, one tensor per layer).

Both may start empty: `load_state_dict` into an empty container creates the saved tensors (with their shapes and
dtypes) before filling them, so that a state computed once (DELTA's attention) is restored into a fresh regulariser;
into a filled one it is the strict, in-place `nn.Module` loading.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn


def _saved_entries(module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state_dict` under `prefix` (names relative to it) when `module` holds no buffer yet, else {}."""
    if any(True for _ in module.buffers()):
        return {}
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


class BufferDict(nn.Module):
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, tensor in _saved_entries(self, state_dict, prefix).items():
            self[name] = torch.empty_like(tensor)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class BufferList(nn.Module):
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = _saved_entries(self, state_dict, prefix)
        if sorted(saved) != sorted(map(str, range(len(saved)))):
            raise ValueError(f"The saved `{prefix}*` tensors are not numbered 0, 1...: {sorted(saved)}.")
        for index in range(len(saved)):
            self.append(torch.empty_like(saved[str(index)]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
