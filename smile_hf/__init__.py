# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""smile_hf: SMILE (Self-Distilled MIxup for Efficient Transfer LEarning) and transfer-learning baselines for the
Hugging Face `Trainer`."""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "backbones": ("BACKBONES", "BackboneAdapter", "BackboneSpec", "ForwardOutput", "UnsupportedBackboneError",
                  "register_backbone"),
    "config": ("SmileTrainingArguments",),
    "loss": ("LossOutput", "TransferLoss"),
    "methods": ("REGULARIZERS", "Regularizer", "register_regularizer"),
    "mixing": ("Mix", "mix_inputs", "mix_tensor", "mixed_cross_entropy", "sample_mix", "soft_cross_entropy"),
    "modeling": ("load_source_model", "load_student"),
    "teacher": ("EmaTeacher", "EmaTeacherCallback", "FixedTeacher", "Teacher"),
    "trainer": ("SmileTrainer",),
}  # fmt: skip
"""Module -> the names the package exports from it, imported on first use: `import smile_hf` (and the `smile-hf`
command's `--help`) imports neither torch nor transformers."""
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:  # the same names, for type checkers and the API docs
    from .backbones import BACKBONES as BACKBONES
    from .backbones import BackboneAdapter as BackboneAdapter
    from .backbones import BackboneSpec as BackboneSpec
    from .backbones import ForwardOutput as ForwardOutput
    from .backbones import UnsupportedBackboneError as UnsupportedBackboneError
    from .backbones import register_backbone as register_backbone
    from .config import SmileTrainingArguments as SmileTrainingArguments
    from .loss import LossOutput as LossOutput
    from .loss import TransferLoss as TransferLoss
    from .methods import REGULARIZERS as REGULARIZERS
    from .methods import Regularizer as Regularizer
    from .methods import register_regularizer as register_regularizer
    from .mixing import Mix as Mix
    from .mixing import mix_inputs as mix_inputs
    from .mixing import mix_tensor as mix_tensor
    from .mixing import mixed_cross_entropy as mixed_cross_entropy
    from .mixing import sample_mix as sample_mix
    from .mixing import soft_cross_entropy as soft_cross_entropy
    from .modeling import load_source_model as load_source_model
    from .modeling import load_student as load_student
    from .teacher import EmaTeacher as EmaTeacher
    from .teacher import EmaTeacherCallback as EmaTeacherCallback
    from .teacher import FixedTeacher as FixedTeacher
    from .teacher import Teacher as Teacher
    from .trainer import SmileTrainer as SmileTrainer


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
