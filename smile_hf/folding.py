# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""A cheaper copy of an eval-mode model for inference-only forward passes (the teacher's): every BatchNorm that
normalises the output of a convolution folded into it, and optionally the weights cast to another dtype or put in
the channels-last memory format.

In eval mode a BatchNorm is an affine map per channel, `y = (x - mean) * gamma / sqrt(var + eps) + beta`, so
`BN(conv(x))` equals one convolution with weight `w * s` and bias `(b - mean) * s + beta`, `s = gamma / sqrt(var +
eps)`. This is exact in real arithmetic; in floating point the result differs by rounding. The folded BatchNorm is
replaced by an `nn.Identity` at the same path, whose output is the folded convolution's: a hook on the BatchNorm's
path (the capture hooks of [`BackboneAdapter`]) still fires there with the same value.

[`ForwardCopy`] keeps such a copy of a model (the EMA shadow) and [`~ForwardCopy.refresh`]es it from the model's
current tensors: tensors kept as they are are shared with the model (no copy); folded convolutions, cast tensors and
channels-last weights are the copy's own.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from .backbones.capture import _SINKS

logger = logging.getLogger(__name__)

FOLD_CHECK_RTOL = 1e-3
"""Relative tolerance (to the largest logit) of the one-off check that the folded copy computes the model's logits;
float32 folding differs by ~1e-6 relative, a model whose convolution output is read elsewhere by far more."""


def conv_bn_pairs(model: nn.Module, pixel_values: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution path, BatchNorm path) of every `nn.BatchNorm2d` of `model` whose input is the output of an
    `nn.Conv2d`, found by running `model` once on `pixel_values`.

    A pair is kept only when the convolution and the BatchNorm each run once per forward pass and no other module
    reads the convolution's output (a functional use outside modules is caught by [`ForwardCopy`]'s check)."""
    names = {module: name for name, module in model.named_modules()}
    outputs, inputs, calls, handles = {}, {}, {}, []
    keep_alive = []  # tensors kept referenced during the pass, so that their ids stay unique

    def pre_hook(module, args):
        calls[module] = calls.get(module, 0) + 1
        for arg in args:
            if isinstance(arg, torch.Tensor):
                keep_alive.append(arg)
                inputs.setdefault(id(arg), []).append(module)

    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            keep_alive.append(output)
            outputs[id(output)] = module

    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook))
        if type(module) is nn.Conv2d:
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for handle in handles:
            handle.remove()
    pairs = []
    for key, conv in outputs.items():
        readers = inputs.get(key, [])
        if len(readers) != 1 or type(readers[0]) is not nn.BatchNorm2d:
            continue
        bn = readers[0]
        if bn.running_mean is None or calls[conv] != 1 or calls[bn] != 1 or bn.num_features != conv.out_channels:
            continue
        pairs.append((names[conv], names[bn]))
    return pairs


@torch.no_grad()
def folded_conv_parameters(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of the convolution equal to `bn(conv(x))` in eval mode, computed in float64, in `dtype`."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = -mean if conv.bias is None else conv.bias.double() - mean
    bias = bias * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    return weight.to(dtype), bias.to(dtype)


class ForwardCopy:
    """An inference copy of `model` (kept in eval mode, never trained): BatchNorms folded into their convolutions
    (`fold_batchnorm`), weights cast to `dtype`. Call [`~ForwardCopy.refresh`] after `model` changed (an EMA update,
    `load_state_dict`); `module()` returns the copy, refreshed if needed.

    Args:
        model (`nn.Module`): the model (the EMA shadow, which stays unchanged and exact).
        fold_batchnorm (`bool`): fold each conv + BatchNorm pair ([`conv_bn_pairs`]).
        dtype (`torch.dtype`, *optional*): cast the floating-point parameters and buffers of the copy (bf16).
        channels_last (`bool`, *optional*, defaults to `False`): the copy's 4-D weights in the channels-last memory
            format (its input is to be passed in it too: [`~ForwardCopy.prepare_input`]).
    """

    def __init__(
        self, model: nn.Module, fold_batchnorm: bool = True, dtype: torch.dtype | None = None, channels_last: bool = False
    ):
        self.model = model
        self.fold_batchnorm = fold_batchnorm
        self.dtype = dtype
        self.channels_last = channels_last
        self.copy: nn.Module | None = None
        self.pairs: list[tuple[str, str]] = []
        self.stale = True
        self.recorded = False
        self.compile_options: dict | None = None

    def invalidate(self) -> None:
        """Drop the copy (the model's tensors were replaced: `to`, `load_state_dict`); it is built again on use."""
        self.copy, self.stale = None, True

    def mark_stale(self) -> None:
        """The model's tensors changed in place (an EMA update): the copy is refreshed on its next use."""
        self.stale = True

    def module(self, pixel_values: torch.Tensor) -> nn.Module:
        """The copy, built (tracing the model once on the first image of `pixel_values`) or refreshed if needed; the
        model itself while one of its modules records its outputs ([`smile_hf.backbones.record_outputs`]: a method
        reading the model's inner layers, which the copy would not feed)."""
        if self.copy is None or self.stale:
            self.recorded = any(getattr(module, _SINKS, None) for module in self.model.modules())
            if self.recorded:
                return self.model
        if self.copy is None:
            self._build(pixel_values[:1])
        elif self.stale:
            self.refresh()
        return self.copy

    def _build(self, probe: torch.Tensor) -> None:
        model = self.model
        pairs = conv_bn_pairs(model, probe) if self.fold_batchnorm else []
        folded = {f"{conv}.{name}" for conv, _ in pairs for name in ("weight", "bias")}
        folded |= {f"{bn}.{name}" for _, bn in pairs for name, _ in model.get_submodule(bn).named_parameters()}
        folded |= {f"{bn}.{name}" for _, bn in pairs for name, _ in model.get_submodule(bn).named_buffers()}
        shared = {
            id(tensor): tensor for name, tensor in (*model.named_parameters(), *model.named_buffers())
            if name not in folded and not self._owns(tensor)
        }  # fmt: skip
        clone = copy.deepcopy(model, memo=shared)  # tensors kept as they are in the model are shared with it
        for conv_path, bn_path in pairs:
            parent, _, child = bn_path.rpartition(".")
            clone.get_submodule(parent).register_module(child, nn.Identity())
            conv = clone.get_submodule(conv_path)
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.empty_like(conv.weight[:, 0, 0, 0]), requires_grad=False)
        if self.dtype is not None:
            clone.to(dtype=self.dtype)
        if self.channels_last:
            clone.to(memory_format=torch.channels_last)
        self.copy, self.pairs = clone.eval().requires_grad_(False), pairs
        self.refresh()
        if pairs and not self._check(probe):
            logger.warning("BatchNorm folding changed this model's outputs (a convolution's output is read beyond its "
                           "BatchNorm): the teacher runs unfolded.")  # fmt: skip
            self.fold_batchnorm = False
            self._build(probe)
            return
        if self.compile_options is not None:
            self.copy.compile(**self.compile_options)

    def _owns(self, tensor: torch.Tensor) -> bool:
        """Whether the copy holds its own version of a tensor of the model (cast, or 4-D in channels-last)."""
        return tensor.is_floating_point() and (self.dtype is not None or (self.channels_last and tensor.dim() == 4))

    def prepare_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values` in the copy's dtype and memory format."""
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        if self.channels_last and pixel_values.dim() == 4:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    @torch.no_grad()
    def _check(self, probe: torch.Tensor) -> bool:
        reference = self.model(pixel_values=probe)[0].float()
        folded = self.copy(pixel_values=self.prepare_input(probe))[0].float()
        return bool((folded - reference).abs().max() <= FOLD_CHECK_RTOL * reference.abs().max().clamp_min(1e-6))

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the copy's tensors from the model's: the folded convolutions, and (cast copies) every tensor."""
        model, clone = self.model, self.copy
        sources = dict((*model.named_parameters(), *model.named_buffers()))
        targets = [(t, sources[n]) for n, t in (*clone.named_parameters(), *clone.named_buffers()) if n in sources]
        targets = [(t, s) for t, s in targets if t is not s and self._owns(s)]
        if targets:
            torch._foreach_copy_([t for t, _ in targets], [s for _, s in targets])
        for conv_path, bn_path in self.pairs:
            target = clone.get_submodule(conv_path)
            weight, bias = folded_conv_parameters(model.get_submodule(conv_path), model.get_submodule(bn_path),
                                                  target.weight.dtype)  # fmt: skip
            target.weight.copy_(weight)
            target.bias.copy_(bias)
        self.stale = False
