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
kept on this method object (not in the optimizer) and saved in every checkpoint, so that a resumed run keeps the
true starting point. Frozen parameters (`requires_grad=False`) are left out: their term is a constant.

Under mixing the penalty does not depend on the inputs and is unchanged.
"""

from __future__ import annotations

import torch

from ..backbones import unwrap_model
from .base import LossInputs, LossTerms, TransferMethod, half_squared_norm
from .registry import register_method


def trainable_backbone_parameters(adapter, model) -> dict[str, torch.nn.Parameter]:
    """The backbone parameters of `model` that training updates, by name."""
    return {name: p for name, p in adapter.backbone_named_parameters(model) if p.requires_grad}


def starting_point_distance(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> torch.Tensor:
    """Omega_SP = 1/2 sum over tensors of ||w - w0||^2 (float32 accumulation)."""
    if params.keys() != start.keys():
        missing = sorted(params.keys() ^ start.keys())[:3]
        raise ValueError(f"The L2-SP starting point does not match the backbone (e.g. {missing}).")
    return 0.5 * sum((p.float() - start[name].float()).pow(2).sum() for name, p in params.items())


def head_penalty(inputs: LossInputs) -> torch.Tensor:
    """1/2 ||w_head||^2 over the new classifier's weight and bias (shared by L2-SP and DELTA)."""
    return half_squared_norm(p.float() for p in inputs.adapter.head(inputs.model).parameters())


@register_method
class L2SP(TransferMethod):
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
    hyperparameters = ("l2sp_alpha", "l2sp_beta")

    def __init__(self, args):
        super().__init__(args)
        self.starting_point: dict[str, torch.Tensor] = {}

    def setup(self, trainer) -> None:
        if self.starting_point:
            return
        params = trainable_backbone_parameters(trainer.adapter, unwrap_model(trainer.model))
        self.starting_point = {name: p.detach().clone() for name, p in params.items()}

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        if not self.starting_point:
            raise RuntimeError("L2-SP has no starting point: SmileTrainer.train() calls `setup` before training.")
        params = trainable_backbone_parameters(inputs.adapter, inputs.model)
        self._follow_devices(params)
        return {
            "sp": (self.args.l2sp_alpha, starting_point_distance(params, self.starting_point)),
            "head": (self.args.l2sp_beta, head_penalty(inputs)),
        }

    def _follow_devices(self, params: dict[str, torch.Tensor]) -> None:
        """Move w0 next to the parameters once (a checkpoint's state is loaded on the CPU)."""
        for name, p in params.items():
            start = self.starting_point.get(name)
            if start is not None and start.device != p.device:
                self.starting_point[name] = start.to(p.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"w0.{name}": t for name, t in self.starting_point.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        loaded = {k[len("w0.") :]: v for k, v in state.items() if k.startswith("w0.")}
        if not loaded:
            return
        if self.starting_point and loaded.keys() != self.starting_point.keys():
            raise ValueError("The checkpoint's L2-SP starting point does not match this model's backbone.")
        devices = {name: t.device for name, t in self.starting_point.items()}
        self.starting_point = {name: t.to(devices.get(name, t.device), copy=True) for name, t in loaded.items()}
