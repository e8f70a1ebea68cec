# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What the backbone adapter needs to know about a model family, the registry of custom families, and the model
types that cannot be supported (with the reason)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from torch import nn

from .._compat import compiled_inner

SOURCE_HEAD_NAME = "smile_source_head"
"""Attribute under which a trainable copy of the source (pre-trained) head is attached to the student."""


class UnsupportedBackboneError(ValueError):
    """Raised for a model whose feature map, pooled feature or classifier cannot be found."""


@dataclass(frozen=True)
class BackboneSpec:
    """Where the pieces of one model family live. Every field left to `None` is derived from the model.

    Args:
        head (`str`, *optional*): dotted path, from the `...ForImageClassification` model, of the final `nn.Linear`
            classifier; several classifiers whose logits the model averages (distilled DeiT, LeViT, SwiftFormer)
            are separated by `,`. Derived: the `nn.Linear` layers outside the trunk with `config.num_labels` outputs.
        stages (`str`, *optional*): dotted path of the `nn.ModuleList` of backbone stages (DELTA, manifold mixup),
            or comma-separated paths of the stage modules; alternatives are separated by `|`. Derived: the `nn.ModuleList` whose outputs are the model's
            `hidden_states`.
        num_special_tokens (`int`, *optional*): most tokens before the patch tokens in a token layout (ViT: 1,
            distilled DeiT: 2, DINOv2 with 4 registers: 5). Derived from the class, distillation and register token
            parameters (timm: `num_prefix_tokens`).
        tokens (`bool`): whether B x N x C states are token sequences (they always are for the derived families).
        trunk (`str`, *optional*): dotted path of the module whose output's `last_hidden_state` is the last feature
            map. Derived: `model.base_model`, or the vision tower when `base_model` is the classifier itself.
        channels_last (`bool`): whether 4-D maps are B x H x W x C (timm models with `output_fmt == "NHWC"`).
        shared_head_input (`bool`): whether several classifiers read the same feature (SwiftFormer) rather than one
            each (distilled DeiT: the class and distillation tokens; LeViT: a BatchNorm each). Found by a forward pass.
    """

    head: str | None = None
    stages: str | None = None
    num_special_tokens: int | None = None
    tokens: bool = True
    trunk: str | None = None
    channels_last: bool = False
    shared_head_input: bool = True


BACKBONES: dict[str, BackboneSpec] = {}
"""Model families registered by hand ([`register_backbone`]); every other supported family is derived."""


def register_backbone(model_type: str, spec: BackboneSpec) -> None:
    """Teach the adapter a model family (`config.model_type`) whose parts cannot be derived, e.g. a custom model.
    Fields left to `None` in `spec` are still derived."""
    BACKBONES[model_type] = spec


UNSUPPORTED: dict[str, str] = {
    "siglip2": (
        "its classifier takes pre-patchified inputs (B x N x 3*p*p `pixel_values` with `pixel_attention_mask` and "
        "`spatial_shapes`), not B x 3 x H x W images, so images cannot be mixed. Use a 'siglip' checkpoint"
    ),
    "perceiver": (
        "it classifies from a latent array through cross-attention: there is no spatial feature map for SMILE's "
        "feature term or DELTA. Use a convolutional or ViT family"
    ),
    "imagegpt": (
        "it takes `input_ids` (pixels quantised to colour clusters), not `pixel_values`, so images cannot be mixed. "
        "Use a ViT family"
    ),
    "shieldgemma2": (
        "it is a vision-language model that scores images against text policies with a language model, not an "
        "image classifier with a feature map and a linear head"
    ),
}
"""Model types of transformers' image-classification mapping that cannot be supported, with the reason."""

NEEDS_PACKAGE: dict[str, str] = {"dinat": "natten"}
"""Model types whose modelling code needs an extra package: supported (untested) only where it imports."""


def unsupported_reason(model_type: str | None) -> str | None:
    """Why `model_type` cannot be supported here, or None."""
    if model_type in UNSUPPORTED:
        return UNSUPPORTED[model_type]
    package = NEEDS_PACKAGE.get(model_type)
    if package is not None and importlib.util.find_spec(package) is None:
        return f"its neighbourhood attention needs the `{package}` package, which is not installed"
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP / DataParallel / `torch.compile` / peft `PeftModel` wrappers (for a `PeftModel`, the
    `transformers` model with the adapter layers injected)."""
    while True:
        inner = getattr(model, "module", None) or compiled_inner(model)
        if inner is None and callable(getattr(type(model), "get_base_model", None)):  # peft's PeftModel
            inner = model.get_base_model()
        if not isinstance(inner, nn.Module):
            return model
        model = inner
