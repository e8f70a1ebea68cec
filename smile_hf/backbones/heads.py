# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The classifier head(s) of a model seen as one module, and the trainable copy of the source head."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


class ClassifierHeads(nn.ModuleList):
    """Several final `nn.Linear` classifiers whose logits a model averages (distilled DeiT, LeViT, SwiftFormer).

    Applied to a pooled feature, it computes `mean_k head_k(x_k)`, where `x_k` is the whole input when the heads
    share it (`shared_input=True`) or the k-th slice of the concatenated inputs otherwise.

    Args:
        heads (`Sequence[nn.Linear]`): the classifiers, in the order the model calls them.
        shared_input (`bool`): whether every head reads the same feature.
    """

    def __init__(self, heads: Sequence[nn.Linear], shared_input: bool):
        super().__init__(heads)
        self.shared_input = shared_input

    @property
    def in_features(self) -> int:
        """Size of the pooled feature the module takes."""
        sizes = [head.in_features for head in self]
        return sizes[0] if self.shared_input else sum(sizes)

    @property
    def out_features(self) -> int:
        """Number of classes."""
        return self[0].out_features

    def reset_parameters(self) -> None:
        """Re-initialise every head (PyTorch's default `nn.Linear` initialisation)."""
        for head in self:
            head.reset_parameters()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """The mean of the heads' logits on `pooled` (B x `in_features`)."""
        if self.shared_input:
            parts = [pooled] * len(self)
        else:
            parts = pooled.split([head.in_features for head in self], dim=-1)
        return torch.stack([head(part) for head, part in zip(self, parts)]).mean(dim=0)


def combine_heads(heads: Sequence[nn.Linear], shared_input: bool = True) -> nn.Module:
    """One module for the classifiers: the `nn.Linear` itself when there is one, else a [`ClassifierHeads`]."""
    return heads[0] if len(heads) == 1 else ClassifierHeads(heads, shared_input)


def build_source_head_copy(adapter, source_model: nn.Module) -> nn.Module:
    """A trainable copy of the source model's head (the auxiliary head of SMILE, Co-Tuning's source head): applied to
    the pooled feature of the source model it gives the source model's logits."""
    head = adapter.head(source_model)
    weight = next(head.parameters())
    return copy.deepcopy(head).requires_grad_(True).to(device=weight.device, dtype=weight.dtype)
