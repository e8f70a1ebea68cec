"""Tiny models of every supported family, built from configs (no download), for the tests."""

from __future__ import annotations

import copy

import torch
import transformers as T
from torch import nn

from smile_hf.backbones import BackboneAdapter

IMAGE_SIZE = 64  # large enough that every family's last feature map is at least 2 x 2

TINY_CONFIGS = {
    "resnet": lambda n: T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=n),
    "convnext": lambda n: T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=n),
    "vit": lambda n: T.ViTConfig(
        image_size=IMAGE_SIZE, patch_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=n,
    ),
    "deit": lambda n: T.DeiTConfig(
        image_size=IMAGE_SIZE, patch_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=n,
    ),
    "swin": lambda n: T.SwinConfig(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=n
    ),
    "mobilenet_v2": lambda n: T.MobileNetV2Config(depth_multiplier=0.25, image_size=IMAGE_SIZE, num_labels=n),
    "efficientnet": lambda n: T.EfficientNetConfig(
        width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, image_size=IMAGE_SIZE, num_labels=n
    ),
}  # fmt: skip
FAMILIES = sorted(TINY_CONFIGS)


def tiny_model(family: str, num_labels: int, seed: int = 0) -> nn.Module:
    """A randomly initialised tiny image classifier of `family`."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[family](num_labels)
    if family == "deit":
        return T.DeiTForImageClassification(config)
    return T.AutoModelForImageClassification.from_config(config)


def source_and_student(family: str, num_source: int = 7, num_target: int = 3, seed: int = 0):
    """A 'pre-trained' source model and a student with the same backbone and a new head of `num_target` classes."""
    source = tiny_model(family, num_source, seed)
    student = tiny_model(family, num_target, seed + 1)
    student.base_model.load_state_dict(source.base_model.state_dict())
    adapter = BackboneAdapter(student)
    assert adapter.head(student).out_features == num_target
    return source, student


def random_image_dataset(num: int = 32, num_labels: int = 3, size: int = IMAGE_SIZE, seed: int = 0):
    """A `datasets.Dataset` of random pixel_values / labels in torch format."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(num, 3, size, size, generator=g)
    labels = torch.randint(0, num_labels, (num,), generator=g)
    return Dataset.from_dict({"pixel_values": pixel_values.numpy(), "labels": labels.numpy()}).with_format("torch")


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
