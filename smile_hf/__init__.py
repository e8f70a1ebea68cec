# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""smile_hf: SMILE (Self-Distilled MIxup for Efficient Transfer LEarning) and transfer-learning baselines for the
Hugging Face `Trainer`."""

__version__ = "0.1.0"

import importlib

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


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
