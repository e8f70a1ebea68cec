# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""L2-SP: Explicit Inductive Bias for Transfer Learning with Convolutional Networks (Li, Grandvalet, Davoine;
ICML 2018, arXiv 1802.01483).

With w the student's backbone parameters (everything under `model.base_model`), w0 their pre-trained values and
w_head the parameters of the new classifier:

    L = L_main + l2sp_alpha * 1/2 ||w - w0||^2 + l2sp_beta * 1/2 ||w_head||^2

Plain sums of squares, no normalisation, both weights 0.01 (TLlib `SPRegularization` + `L2Regularization`,
`examples/task_adaptation/image_classification/delta.py --regularization-type l2_sp`, which trains with weight
decay 0: set `weight_decay=0` to reproduce it). The RIFLE reference uses the same squared form with beta = 1e-4;
PaddleTransfer's unsquared per-tensor norms are a different penalty and not offered.

w0 is a snapshot of the student's backbone taken once, when training starts (before any checkpoint is loaded),
held in the regulariser's buffers (`w0.<parameter name>`, not in the optimizer) and saved in every checkpoint, so that
a resumed run keeps the true starting point. Frozen parameters (`requires_grad=False`) are left out: their term is a constant.

Under mixing the penalty does not depend on the inputs and is unchanged.
"""

from __future__ import annotations

import torch

from ..shards import shard_like, sum_over_shards
from .base import LossInputs, LossTerms, Regularizer, half_squared_norm
from .buffers import BufferDict
from .context import RegularizerContext, as_context
from .hyperparameters import HyperParameter
from .registry import register_regularizer

_TLLIB = "TLlib examples/task_adaptation/image_classification/delta.py --regularization-type l2_sp"
L2SP_BETA = HyperParameter(
    "l2sp_beta", 0.01, "L2-SP and DELTA (TLlib): weight of 1/2 ||w||^2 on the new head.", low=0, search=(1e-4, 1.0),
    log=True, doc="L2-SP, DELTA (TLlib, `delta_tllib`): weight of 1/2 ||w||^2 on the new head.", reference=_TLLIB,
)
"""The weight of the head penalty, shared by L2-SP and TLlib's DELTA (`delta_tllib`)."""


def trainable_backbone_parameters(adapter, model) -> dict[str, torch.nn.Parameter]:
    """The backbone parameters of `model` that training updates, by name."""
    return {name: p for name, p in adapter.backbone_named_parameters(model) if p.requires_grad}


def starting_point_distance(params: dict[str, torch.Tensor], start: BufferDict) -> torch.Tensor:
    """Omega_SP = 1/2 sum over tensors of ||w - w0||^2 (float32 accumulation). FSDP2 shards are summed locally and
    all-reduced ([`smile_hf.shards.sum_over_shards`]): every rank holds the unsharded value."""
    if params.keys() != start.keys():
        missing = sorted(params.keys() ^ start.keys())[:3]
        raise ValueError(f"The L2-SP starting point does not match the backbone (e.g. {missing}).")
    names = list(params)
    return sum_over_shards(_half_squared_distance, [params[n] for n in names], [start[n] for n in names])


def _half_squared_distance(params: list[torch.Tensor], starts: list[torch.Tensor]) -> torch.Tensor:
    return 0.5 * sum((p.float() - w0.float()).pow(2).sum() for p, w0 in zip(params, starts))


def head_penalty(inputs: LossInputs) -> torch.Tensor:
    """1/2 ||w_head||^2 over the new classifier's weight and bias (shared by L2-SP and `delta_tllib`)."""
    return half_squared_norm(p.float() for p in inputs.adapter.head(inputs.model).parameters())


@register_regularizer
class L2SP(Regularizer):
    """L2-SP (see the module docstring for the formula and the reference)."""

    name = "l2sp"
    title = "L2-SP"
    paper = (
        "Li, Grandvalet, Davoine. Explicit Inductive Bias for Transfer Learning with Convolutional Networks. "
        "ICML 2018, arXiv 1802.01483."
    )
    description = (
        "L2-SP (Li, Grandvalet, Davoine, 2018) penalises the squared distance of the backbone to its pre- "
        "trained weights and the squared norm of the new head."
    )
    hyperparameters = (
        HyperParameter(
            "l2sp_alpha", 0.01, "L2-SP: weight of 1/2 ||w - w0||^2 on the backbone.", low=0, search=(1e-4, 1.0),
            log=True, doc="L2-SP: weight of 1/2 ||w - w0||^2 on the pre-trained backbone weights.", reference=_TLLIB,
        ),
        L2SP_BETA,
    )  # fmt: skip

    def __init__(self, *args, **hyperparameters):
        super().__init__(*args, **hyperparameters)
        self.w0 = BufferDict()

    @property
    def starting_point(self) -> BufferDict:
        """w0, by backbone parameter name (empty before `setup`)."""
        return self.w0

    def setup(self, context: RegularizerContext) -> None:
        """Snapshot the trainable backbone parameters as w0 (unless already taken)."""
        if len(self.w0):
            return
        context = as_context(context)
        for name, p in trainable_backbone_parameters(context.adapter, context.model).items():
            self.w0[name] = p.detach().clone()

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        if not len(self.w0):
            raise RuntimeError("L2-SP has no starting point: call `setup(context)` before training (SmileTrainer.train does).")
        params = trainable_backbone_parameters(inputs.adapter, inputs.model)
        self.follow_device(next(iter(params.values())).device)
        self._shard_like(params)
        return {
            "sp": (self.l2sp_alpha, starting_point_distance(params, self.w0)),
            "head": (self.l2sp_beta, head_penalty(inputs)),
        }

    def _shard_like(self, params: dict[str, torch.Tensor]) -> None:
        """Cut a starting point taken before the model was sharded (FSDP2) into the shards of its parameters, once."""
        for name, p in params.items():
            start = self.w0[name]
            sharded = shard_like(start, p)
            if sharded is not start:
                self.w0[name] = sharded

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`, refusing in one line a starting point of another backbone."""
        loaded = {k[len("w0.") :] for k in state_dict if k.startswith("w0.")}
        if len(self.w0) and loaded and loaded != set(self.w0.keys()):
            raise ValueError("The checkpoint's L2-SP starting point does not match this model's backbone.")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
