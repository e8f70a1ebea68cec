# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""smile_hf: SMILE (Self-Distilled MIxup for Efficient Transfer LEarning) and transfer-learning baselines for the
Hugging Face `Trainer`."""

__version__ = "0.1.0"

from .backbones import (
    BACKBONES,
    BackboneAdapter,
    BackboneSpec,
    ForwardOutput,
    UnsupportedBackboneError,
    register_backbone,
)
from .config import SmileTrainingArguments
from .loss import LossOutput, TransferLoss
from .methods import REGULARIZERS, Regularizer, register_regularizer
from .mixing import Mix, mix_inputs, mix_tensor, mixed_cross_entropy, sample_mix, soft_cross_entropy
from .modeling import load_source_model, load_student
from .teacher import EmaTeacher, EmaTeacherCallback, FixedTeacher, Teacher
from .trainer import SmileTrainer

__all__ = [
    "BACKBONES",
    "REGULARIZERS",
    "BackboneAdapter",
    "BackboneSpec",
    "EmaTeacher",
    "EmaTeacherCallback",
    "FixedTeacher",
    "ForwardOutput",
    "LossOutput",
    "Mix",
    "SmileTrainer",
    "SmileTrainingArguments",
    "Teacher",
    "TransferLoss",
    "Regularizer",
    "UnsupportedBackboneError",
    "load_source_model",
    "load_student",
    "mix_inputs",
    "mix_tensor",
    "mixed_cross_entropy",
    "register_backbone",
    "register_regularizer",
    "sample_mix",
    "soft_cross_entropy",
]
