# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The registry of transfer-learning methods and the grammar of the `method` argument.

A method string is a regulariser (`"smile"`, `"l2sp"`...), a mixing strategy (`"mixup"`: fine-tuning with mixup) or
both joined by `+` (`"l2sp+cutmix"`). Methods register themselves with [`register_method`] when their module is
imported; `smile_hf.methods` imports the built-in ones.
"""

from __future__ import annotations

from typing import Any

from ..mixing import MIXING_HYPERPARAMETERS, MIXING_STRATEGIES, MIXING_TITLES
from .base import TransferMethod

METHODS: dict[str, type[TransferMethod]] = {}
"""Every registered method class, by its `name`."""


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
        raise ValueError(
            f"Unknown `method` '{method}'. Use a regulariser, a mixing strategy or 'regulariser+mixing' ({known})."
        )
    regularizer = parts[0]
    return regularizer, parts[1] if len(parts) == 2 else METHODS[regularizer].default_mixing


def get_method_class(method: str) -> type[TransferMethod]:
    """The class of the regulariser named by a method string."""
    return METHODS[parse_method(method)[0]]


def build_method(args) -> TransferMethod:
    """Instantiate the regulariser named by `args.method`."""
    return get_method_class(args.method)(args)


def method_title(method: str) -> str:
    """Readable name of a method string (`"smile"` -> "SMILE (...)", `"l2sp+mixup"` -> "L2-SP with mixup")."""
    regularizer, mixing = parse_method(method)
    cls = METHODS[regularizer]
    if mixing is None or mixing == cls.default_mixing:
        return cls.title
    if regularizer == "finetune":
        return f"fine-tuning with {MIXING_TITLES[mixing]}"
    return f"{cls.title} with {MIXING_TITLES[mixing]}"


def method_hyperparameters(args) -> dict[str, Any]:
    """The arguments of `args` (a `SmileTrainingArguments`) that the chosen method and its mixing read."""
    regularizer, mixing = parse_method(args.method)
    names = ["method", *METHODS[regularizer].hyperparameters, *MIXING_HYPERPARAMETERS.get(mixing, ())]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
