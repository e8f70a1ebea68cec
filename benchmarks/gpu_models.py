# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The models of the GPU speed preset (ResNet-50, ViT-B/16, ConvNeXt-T, Swin-T at 224 px, and tiny configs for
tests; random weights from transformers configs) and a synthetic batch resident on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers
from torch import nn

SOURCE_LABELS = 1000
TARGET_LABELS = 100


@dataclass(frozen=True)
class GpuModelSpec:
    name: str
    description: str
    config: callable  # num_labels -> PretrainedConfig
    image_size: int
    batch_size: int


def _spec(name, description, config, image_size, batch_size) -> GpuModelSpec:
    return GpuModelSpec(name, description, config, image_size, batch_size)


def resnet50(n):
    return transformers.ResNetConfig(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck",
        num_labels=n,
    )  # fmt: skip


def vit_b16(n):
    return transformers.ViTConfig(
        image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, num_labels=n,
    )  # fmt: skip


def convnext_t(n):
    return transformers.ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=n)


def swin_t(n):
    return transformers.SwinConfig(
        image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        num_labels=n,
    )  # fmt: skip


GPU_MODELS = {
    "resnet50-b48": _spec("resnet50-b48", "ResNet-50 (microsoft/resnet-50's layout)", resnet50, 224, 48),
    "resnet50-b128": _spec("resnet50-b128", "ResNet-50 (microsoft/resnet-50's layout)", resnet50, 224, 128),
    "vit-b16": _spec("vit-b16", "ViT-B/16 (google/vit-base-patch16-224's shape)", vit_b16, 224, 64),
    "convnext-t": _spec("convnext-t", "ConvNeXt-T (facebook/convnext-tiny-224's shape)", convnext_t, 224, 64),
    "swin-t": _spec("swin-t", "Swin-T (microsoft/swin-tiny-patch4-window7-224's shape)", swin_t, 224, 64),
}
"""The preset: realistic models at 224 px."""


TINY_MODELS = {
    "resnet50-b48": _spec(
        "resnet50-b48", "tiny bottleneck ResNet (2 stages 16/32)",
        lambda n: transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", num_labels=n
        ), 32, 4,
    ),
    "resnet50-b128": _spec(
        "resnet50-b128", "tiny bottleneck ResNet (2 stages 16/32)",
        lambda n: transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", num_labels=n
        ), 32, 6,
    ),
    "vit-b16": _spec(
        "vit-b16", "tiny ViT (32 wide, 2 layers, patch 8)",
        lambda n: transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_labels=n,
        ), 32, 4,
    ),
    "convnext-t": _spec(
        "convnext-t", "tiny ConvNeXt (2 stages 16/32)",
        lambda n: transformers.ConvNextConfig(num_stages=2, depths=[1, 1], hidden_sizes=[16, 32], num_labels=n),
        32, 4,
    ),
    "swin-t": _spec(
        "swin-t", "tiny Swin (16 wide, 2 stages, window 4)",
        lambda n: transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=n,
        ), 32, 4,
    ),
}  # fmt: skip
"""The same keys with tiny configs (`--tiny`): the same code path in a few seconds on the CPU."""


def build_models(spec: GpuModelSpec, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A randomly initialised source model (`SOURCE_LABELS` classes) and a student with the same backbone weights
    and a new head (`TARGET_LABELS` classes)."""
    torch.manual_seed(seed)
    source = transformers.AutoModelForImageClassification.from_config(spec.config(SOURCE_LABELS))
    student = transformers.AutoModelForImageClassification.from_config(spec.config(TARGET_LABELS))
    student.base_model.load_state_dict(source.base_model.state_dict())
    return source, student


def device_batch(spec: GpuModelSpec, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic images and labels, created on the device (no host-to-device copy in the step)."""
    g = torch.Generator(device=device).manual_seed(seed)
    size = (spec.batch_size, 3, spec.image_size, spec.image_size)
    return {
        "pixel_values": torch.randn(size, generator=g, device=device),
        "labels": torch.randint(0, TARGET_LABELS, (spec.batch_size,), generator=g, device=device),
    }
