# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Registry of the transfer-learning methods. One module per method; each registers itself here."""

from __future__ import annotations

from ..mixing import MIXING_STRATEGIES
from .base import LossInputs, LossTerms, TransferMethod, half_squared_norm

METHODS: dict[str, type[TransferMethod]] = {}


def register_method(cls: type[TransferMethod]) -> type[TransferMethod]:
    """Class decorator that makes a method selectable by `SmileTrainingArguments.method`."""
    METHODS[cls.name] = cls
    return cls


def parse_method(method: str) -> tuple[str, str | None]:
    """Split a method string into (regulariser, mixing strategy or None).

    `"smile"` -> ("smile", "mixup"); `"mixup"` -> ("finetune", "mixup"); `"l2sp+cutmix"` -> ("l2sp", "cutmix").
    """
    parts = [p.strip() for p in method.split("+")]
    known = f"regularisers: {', '.join(sorted(METHODS))}; mixing: {', '.join(MIXING_STRATEGIES)}"
    if len(parts) == 1 and parts[0] in MIXING_STRATEGIES:
        return "finetune", parts[0]
    if len(parts) > 2 or parts[0] not in METHODS or (len(parts) == 2 and parts[1] not in MIXING_STRATEGIES):
        raise ValueError(f"Unknown `method` '{method}'. Use a regulariser, a mixing strategy or 'regulariser+mixing' ({known}).")
    regularizer = parts[0]
    return regularizer, parts[1] if len(parts) == 2 else METHODS[regularizer].default_mixing


def build_method(args) -> TransferMethod:
    """Instantiate the regulariser named by `args.method`."""
    return METHODS[parse_method(args.method)[0]](args)


from . import bss, cotuning, delta, finetune, l2sp, rifle, smile  # noqa: E402,F401  (register the built-in methods)

__all__ = ["METHODS", "LossInputs", "LossTerms", "TransferMethod", "build_method", "half_squared_norm", "parse_method", "register_method"]
