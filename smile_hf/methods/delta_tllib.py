# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""DELTA as TLlib runs it (`method="delta_tllib"`): TLlib's hook points, formula and weights, for ResNets.

With F_s^j, F_t^j (B x C_j x H_j x W_j) the outputs of the last convolution of the last block of stage j (before
its BatchNorm and the residual sum: TLlib's `layer1.2.conv3` ... `layer4.2.conv3` of a ResNet-50; here
`stages[j].layers[-1].layer[-1].convolution` of a transformers ResNet), for every stage j, and a^j their channel
attention ([`~smile_hf.methods.delta`], steps 1-4, with channel c of the convolution's output zeroed, which is
exactly TLlib's zeroed filter of a convolution without bias):

    Omega = sum_j 1/2 sum_{b,c} C_j * a^j_c * ||F_t^j[b,c] - F_s^j[b,c]||^2 / (H_j * W_j)     (delta_attention)
    Omega = sum_j 1/2 ||F_t^j - F_s^j||_F^2                                                  (no attention)
    L     = L_main + delta_tllib_alpha * Omega + l2sp_beta * 1/2 ||w_head||^2

summed over the batch, with delta_tllib_alpha = l2sp_beta = 0.01: TLlib `AttentionBehavioralRegularization` /
`BehavioralRegularization` + `L2Regularization` (`examples/task_adaptation/image_classification/delta.py`, which
trains with weight decay 0: set `weight_decay=0` to reproduce it). The 1/2 * C_j factor makes this term about C_j / 2
times the SMILE reference's at the same weight (1024x on a ResNet-50's last stage), so the two weights are not
interchangeable; `method="delta"` is the SMILE reference's DELTA.

Only families where that convolution is identifiable are accepted (transformers' `resnet`); any other is refused in
one line. The maps are recorded from these convolutions of the student and the teacher
([`smile_hf.backbones.record_outputs`], set up by `prepare`), which keeps their last outputs; a step's loss
reads the student's, then the teacher's, in the order `TransferLoss` runs them (student first).
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

from ..backbones import record_outputs
from .base import LossInputs, LossTerms
from .context import RegularizerContext, as_context
from .delta import _TLLIB, DELTA_ATTENTION, ChannelAttentionRegularizer
from .hyperparameters import HyperParameter
from .l2sp import L2SP_BETA, head_penalty
from .registry import register_regularizer

TLLIB_FAMILIES = ("resnet",)


def tllib_hook_points(adapter, model: nn.Module) -> list[nn.Module]:
    """The last convolution of the last block of every stage of a transformers ResNet (TLlib's hook points)."""
    if adapter.model_type not in TLLIB_FAMILIES:
        raise ValueError(
            f"delta_tllib hooks the last convolution of each ResNet stage (TLlib's hook points), which model type "
            f"'{adapter.model_type}' does not have: use method 'delta' (the last stage's output)."
        )
    return [stage.layers[-1].layer[-1].convolution for stage in adapter.stages(model)]


def tllib_distance(student_maps, teacher_maps, attention=None) -> torch.Tensor:
    """Omega of the module docstring (float32): attention-weighted if `attention` is given, else plain."""
    total = 0.0
    for j, (student_map, teacher_map) in enumerate(zip(student_maps, teacher_maps, strict=True)):
        diff = student_map.float() - teacher_map.detach().float()
        if attention is None:
            total = total + 0.5 * diff.pow(2).sum()
            continue
        _, channels, height, width = diff.shape
        per_channel = diff.pow(2).sum(dim=(2, 3))  # B x C
        total = total + 0.5 * channels * (per_channel * attention[j].to(per_channel.device)).sum() / (height * width)
    return total


@register_regularizer
class DeltaTLlib(ChannelAttentionRegularizer):
    """DELTA as TLlib runs it: the last convolution of every ResNet stage, 1/2 C a_c scale, weight 0.01, head L2
    (see the module docstring)."""

    name = "delta_tllib"
    title = "DELTA (TLlib)"
    description = (
        "DELTA (Li et al., 2019), as TLlib runs it, penalises the distance between the outputs of the last "
        "convolution of each stage of the student and of the frozen pre-trained ResNet, weighted by channel "
        "importance, and the squared norm of the new head."
    )
    hyperparameters = (
        HyperParameter(
            "delta_tllib_alpha", 0.01, "DELTA (TLlib): weight of the feature-map distance.", low=0,
            search=(1e-4, 1.0), log=True, doc="DELTA (TLlib): weight of sum_j 1/2 sum_{b,c} C_j a_c ||F_s - F_t||^2 / "
            "(H W) on the last convolution of every stage.", reference=_TLLIB,
        ),
        *DELTA_ATTENTION,
        L2SP_BETA,
    )  # fmt: skip

    def __init__(self, *args, **hyperparameters):
        super().__init__(*args, **hyperparameters)
        self._records: deque = deque()  # the hook points' outputs of the last student and teacher forward passes
        self._num_layers = 0

    def hook_points(self, adapter, model: nn.Module) -> list[nn.Module]:
        """The last convolution of every stage (refused for other families than ResNet)."""
        return tllib_hook_points(adapter, model)

    def _record(self, adapter, model: nn.Module) -> None:
        """Record the outputs of the hook points of `model` into the records (once per module)."""
        modules = self.hook_points(adapter, model)
        self._num_layers = len(modules)
        self._records = self._records if self._records.maxlen == 2 * len(modules) else deque(maxlen=2 * len(modules))
        for module in modules:
            record_outputs(module, self._records)

    @torch.no_grad()
    def prepare(self, context: RegularizerContext) -> None:
        """Hook the student's and the teacher's hook points, then compute the channel attention if it is not known."""
        context = as_context(context)
        self._record(context.adapter, context.model)
        self._record(context.teacher.adapter, context.teacher.model)
        super().prepare(context)
        self._records.clear()

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        records, count = list(self._records), self._num_layers
        self._records.clear()
        if count == 0 or len(records) < 2 * count:
            raise RuntimeError("delta_tllib recorded no feature maps: call `prepare(context)` before the first step.")
        self.follow_device(inputs.labels.device)
        student_maps, teacher_maps = records[:count], records[count:]
        distance = tllib_distance(student_maps, teacher_maps, self.layer_attention(count))
        return {"delta": (self.delta_tllib_alpha, distance), "head": (self.l2sp_beta, head_penalty(inputs))}
