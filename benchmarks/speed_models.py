# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The models of the CPU speed benchmark (random weights from transformers configs) and a dataset of random
images."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import transformers
from torch import nn

from .common import SOURCE_CHECKPOINT

NUM_SOURCE_LABELS = 10
NUM_TARGET_LABELS = 10


def small_cnn_config(num_labels: int) -> transformers.PretrainedConfig:
    """The architecture of the bundled source checkpoint (a 3-stage basic-block ResNet, ~80k parameters)."""
    if os.path.isfile(os.path.join(SOURCE_CHECKPOINT, "config.json")):
        config = transformers.AutoConfig.from_pretrained(SOURCE_CHECKPOINT)
        config.num_labels = num_labels
        config.id2label = {i: str(i) for i in range(num_labels)}
        config.label2id = {str(i): i for i in range(num_labels)}
        return config
    return transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic", num_labels=num_labels
    )


@dataclass(frozen=True)
class BenchmarkModelSpec:
    """A model of a step-time comparison: built from `config`, stepped on batches of `batch_size` images."""

    name: str
    description: str
    config: callable
    image_size: int
    batch_size: int
    rounds: int  # interleaved rounds of the step-time comparison (after warm-up)


@dataclass(frozen=True)
class ModelSpec(BenchmarkModelSpec):
    chunks: int  # chunk pairs of the trainer-vs-bare-loop comparison
    chunk_steps: int  # measured steps per chunk (a multiple of the EMA period, 10)


MODELS = {
    "small-cnn": ModelSpec(
        "small-cnn", "ResNet, 3 basic stages 16/32/64 (the bundled checkpoint's architecture), 32x32", small_cnn_config,
        32, 32, 40, 10, 20,
    ),
    "resnet50": ModelSpec(
        "resnet50", "ResNet-50 (microsoft/resnet-50's config, random weights), 64x64",
        lambda n: transformers.ResNetConfig(num_labels=n), 64, 8, 10, 2, 10,
    ),
    "vit": ModelSpec(
        "vit", "ViT-Ti/16 (192 wide, 12 layers, 3 heads; DeiT-Tiny's shape, random weights), 112x112",
        lambda n: transformers.ViTConfig(
            image_size=112, patch_size=16, hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
            intermediate_size=768, num_labels=n,
        ),
        112, 8, 16, 3, 20,
    ),
}  # fmt: skip


def build_models(spec: ModelSpec, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A randomly initialised source model (with a source head) and a student with the same backbone and a new head."""
    torch.manual_seed(seed)
    source = transformers.AutoModelForImageClassification.from_config(spec.config(NUM_SOURCE_LABELS))
    student = transformers.AutoModelForImageClassification.from_config(spec.config(NUM_TARGET_LABELS))
    student.base_model.load_state_dict(source.base_model.state_dict())
    return source, student


class TensorDataset(torch.utils.data.Dataset):
    """In-memory images and labels as the dicts the Trainer's default collator stacks."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor):
        self.pixel_values, self.labels = pixel_values, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[i], "labels": self.labels[i]}


def random_dataset(spec: ModelSpec, num: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(num, 3, spec.image_size, spec.image_size, generator=g)
    return TensorDataset(pixel_values, torch.randint(0, NUM_TARGET_LABELS, (num,), generator=g))
