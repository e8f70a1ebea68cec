# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Per-group learning rates: a smaller learning rate for the pre-trained backbone than for the new head
(`backbone_lr_multiplier`, TLlib's `--finetune` 0.1), and layer-wise decay (`layer_decay`, as in BEiT and timm's
`param_groups_layer_decay`).

The learning rate of a parameter is `learning_rate x scale`, where

    scale = 1                                                  for the classifier head(s) and an attached source head
    scale = backbone_lr_multiplier x layer_decay ** (L + 1 - layer)      for every other (backbone) parameter

`L` is the number of backbone stages the [`BackboneAdapter`] finds (ResNet: 4 stages; ViT: its L encoder blocks;
Swin, ConvNeXt...: their stages), and `layer` is 0 for the parameters registered before the first stage (patch or
stem embeddings), `i + 1` for those of stage `i`, and `L + 1` for those after the last stage (final norm, pooler
norm), which therefore keep `backbone_lr_multiplier` alone. Without `layer_decay` the decay factor is 1.

The groups keep the `Trainer`'s weight-decay exemptions (`Trainer.get_decay_parameter_names`: biases and norms get
none). Every group's `lr` is a multiple of the base one, so any `lr_scheduler_type` (a `LambdaLR` multiplying each
group's initial lr) scales all of them alike.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .backbones import SOURCE_HEAD_NAME, BackboneAdapter, unwrap_model


def _parameter_ids(modules: Iterable[nn.Module]) -> set[int]:
    return {id(p) for module in modules for p in module.parameters()}


def layer_indices(model: nn.Module, adapter: BackboneAdapter) -> dict[int, int | None]:
    """The layer of every parameter of `model`, keyed by `id(parameter)`: `None` for a head (the classifier head(s)
    and an attached source head), else 0 (before the first stage), `i + 1` (in stage `i`) or `L + 1` (after the last
    of the `L` stages), by the order in which `model.named_parameters()` lists them."""
    inner = unwrap_model(model)
    heads = [adapter.head(model), *([getattr(inner, SOURCE_HEAD_NAME)] if hasattr(inner, SOURCE_HEAD_NAME) else [])]
    head_ids = _parameter_ids(heads)
    stage_of = {}
    for index, stage in enumerate(adapter.stages(model)):
        stage_of.update(dict.fromkeys(_parameter_ids([stage]), index + 1))
    num_layers = len(adapter.stages(model))
    layers, seen_stage = {}, False
    for _, parameter in model.named_parameters():
        key = id(parameter)
        if key in head_ids:
            layers[key] = None
        elif key in stage_of:
            layers[key], seen_stage = stage_of[key], True
        else:
            layers[key] = num_layers + 1 if seen_stage else 0
    return layers


def learning_rate_scales(
    model: nn.Module, adapter: BackboneAdapter, backbone_lr_multiplier: float = 1.0, layer_decay: float | None = None
) -> dict[int, float]:
    """The factor of the base learning rate of every parameter of `model`, keyed by `id(parameter)` (see the module
    docstring for the formula)."""
    layers = layer_indices(model, adapter)
    top = len(adapter.stages(model)) + 1
    decay = 1.0 if layer_decay is None else layer_decay
    return {
        key: 1.0 if layer is None else backbone_lr_multiplier * decay ** (top - layer) for key, layer in layers.items()
    }


def grouped_parameters(
    model: nn.Module,
    decay_parameter_names: Iterable[str],
    weight_decay: float,
    learning_rate: float,
    lr_scales: dict[int, float],
) -> list[dict]:
    """Optimizer parameter groups of the trainable parameters of `model`, one per (weight decay, lr scale) pair, each
    with its `lr` (`learning_rate x scale`) and `weight_decay` (`weight_decay` for the names in
    `decay_parameter_names`, else 0) and the `lr_scale` it was built with (for reports and tests)."""
    decay_names = set(decay_parameter_names)
    groups: dict[tuple[float, float], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        group_decay = weight_decay if name in decay_names else 0.0
        scale = lr_scales.get(id(parameter), 1.0)
        group = groups.setdefault(
            (group_decay, scale),
            {"params": [], "weight_decay": group_decay, "lr": learning_rate * scale, "lr_scale": scale},
        )
        group["params"].append(parameter)
    return list(groups.values())



def uses_lr_groups(args) -> bool:
    """Whether `args` (a `SmileTrainingArguments`) asks for per-group learning rates."""
    return args.backbone_lr_multiplier != 1.0 or args.layer_decay is not None


def check_no_user_optimizer(optimizer: torch.optim.Optimizer | None, args) -> None:
    """Refuse per-group learning rates with an optimizer the user built (`Trainer(optimizers=(opt, sched))`): its
    groups are the user's, so the options could not apply."""
    if optimizer is not None and uses_lr_groups(args):
        raise ValueError(
            "`backbone_lr_multiplier` / `layer_decay` build the optimizer's parameter groups, but an optimizer was "
            "passed in `optimizers`: set the groups' lr in it yourself, or pass `optimizer_cls_and_kwargs` instead."
        )


def build_grouped_optimizer(
    model: nn.Module,
    adapter: BackboneAdapter,
    args,
    optimizer_cls,
    optimizer_kwargs: dict,
    decay_parameter_names: Iterable[str],
) -> torch.optim.Optimizer:
    """The optimizer `optimizer_cls(**optimizer_kwargs)` (what `Trainer.get_optimizer_cls_and_kwargs` or
    `optimizer_cls_and_kwargs` gives) over the groups of [`grouped_parameters`], with the scales of `args`'
    `backbone_lr_multiplier` and `layer_decay`. An optimizer that builds its own groups (a factory, GaLore, LOMO,
    layer-wise optimizers) is refused in one line."""
    if not isinstance(optimizer_cls, type) or {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
        raise ValueError(
            f"`backbone_lr_multiplier` / `layer_decay` need an optimizer built from parameter groups; optim "
            f"'{args.optim}' builds its own. Use e.g. optim='adamw_torch' or 'sgd', or leave both unset."
        )
    scales = learning_rate_scales(model, adapter, args.backbone_lr_multiplier, args.layer_decay)
    groups = grouped_parameters(model, decay_parameter_names, args.weight_decay, args.learning_rate, scales)
    return optimizer_cls(groups, **optimizer_kwargs)
