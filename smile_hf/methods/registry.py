# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The registry of regularisers and the grammar of a method spec (the `method` argument).

A method spec is a regulariser (`"smile"`, `"l2sp"`...), a mixing strategy (`"mixup"`: fine-tuning with mixup) or
both joined by `+` (`"l2sp+cutmix"`). Regularisers register themselves with [`register_regularizer`] when their module is
imported; `smile_hf.methods` imports the built-in ones.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..mixing import MIXING_HYPERPARAMETERS, MIXING_STRATEGIES, MIXING_TITLES
from .base import Regularizer
from .hyperparameters import HyperParameter

REGULARIZERS: dict[str, type[Regularizer]] = {}
"""Every registered regulariser class, by its `name`."""


def register_regularizer(cls: type[Regularizer] | None = None, *, replace: bool = False):
    """Class decorator that makes a regulariser selectable in a method spec (`SmileTrainingArguments.method`).

    `@register_regularizer` or `@register_regularizer(replace=True)`. A name already registered is a `ValueError` unless
    `replace=True`; so is a hyperparameter whose name another regulariser declares differently (share the same
    [`HyperParameter`] object instead, as `delta_tllib` shares L2-SP's `l2sp_beta`) or that shadows an attribute of the class.
    The hyperparameters of a regulariser registered after `smile_hf` was imported are fields of
    `SmileTrainingArguments.with_methods()`.
    """
    if cls is None:
        return lambda c: register_regularizer(c, replace=replace)
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or "+" in name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name`: a non-empty string without '+'.")
    if name in REGULARIZERS and not replace:
        taken = REGULARIZERS[name]
        raise ValueError(
            f"Method name '{name}' is already registered by {taken.__module__}.{taken.__qualname__}: choose another "
            "`name`, or pass `replace=True` to `register_regularizer` to replace it."
        )
    _check_declarations(cls, {n: c for n, c in REGULARIZERS.items() if n != name})
    REGULARIZERS[name] = cls
    return cls


def _check_declarations(cls: type[Regularizer], others: dict[str, type[Regularizer]]) -> None:
    declared = {h.name: (n, h) for n, c in others.items() for h in c.hyperparameters}
    for hyperparameter in cls.hyperparameters:
        if hasattr(cls, hyperparameter.name) or hyperparameter.name in vars(nn.Module()):
            raise ValueError(f"Hyperparameter `{hyperparameter.name}` of '{cls.name}' shadows an attribute of the class.")
        owner, other = declared.get(hyperparameter.name, (None, hyperparameter))
        if other != hyperparameter:
            raise ValueError(
                f"Hyperparameter `{hyperparameter.name}` of '{cls.name}' differs from the one '{owner}' declares: "
                "declare it under another name, or reuse that HyperParameter."
            )


def declared_hyperparameters() -> dict[str, HyperParameter]:
    """The hyperparameters of every registered regulariser, by name, in registration and declaration order."""
    return {h.name: h for cls in REGULARIZERS.values() for h in cls.hyperparameters}


def unlabeled_methods() -> list[str]:
    """The registered regularisers that can use unlabelled images (`unlabeled_views`), in registration order."""
    return [name for name, cls in REGULARIZERS.items() if cls.unlabeled_views is not None]


def parse_method(method: str) -> tuple[str, str | None]:
    """Split a method spec into (regulariser, mixing strategy or None).

    `"smile"` -> ("smile", "mixup"); `"mixup"` -> ("finetune", "mixup"); `"l2sp+cutmix"` -> ("l2sp", "cutmix").
    """
    parts = [p.strip() for p in method.split("+")]
    known = f"regularisers: {', '.join(sorted(REGULARIZERS))}; mixing: {', '.join(MIXING_STRATEGIES)}"
    if len(parts) == 1 and parts[0] in MIXING_STRATEGIES:
        return "finetune", parts[0]
    if len(parts) > 2 or parts[0] not in REGULARIZERS or (len(parts) == 2 and parts[1] not in MIXING_STRATEGIES):
        raise ValueError(
            f"Unknown `method` '{method}'. Use a regulariser, a mixing strategy or 'regulariser+mixing' ({known})."
        )
    regulariser = parts[0]
    return regulariser, parts[1] if len(parts) == 2 else REGULARIZERS[regulariser].default_mixing


def get_regularizer_class(method: str) -> type[Regularizer]:
    """The class of the regulariser named by a method spec."""
    return REGULARIZERS[parse_method(method)[0]]


def build_regularizer(args) -> Regularizer:
    """The regulariser of the method spec `args.method`, with the hyperparameters of `args`."""
    return get_regularizer_class(args.method).from_args(args)


def method_title(method: str) -> str:
    """Readable name of a method spec (`"smile"` -> "SMILE (...)", `"l2sp+mixup"` -> "L2-SP with mixup")."""
    regulariser, mixing = parse_method(method)
    cls = REGULARIZERS[regulariser]
    if mixing is None or mixing == cls.default_mixing:
        return cls.title
    if regulariser == "finetune":
        return f"fine-tuning with {MIXING_TITLES[mixing]}"
    return f"{cls.title} with {MIXING_TITLES[mixing]}"


def method_hyperparameters(args) -> dict[str, Any]:
    """The model card's list: the method spec and the values in `args` (a `SmileTrainingArguments`) of the
    hyperparameters its regulariser declares and its mixing strategy reads."""
    regulariser, mixing = parse_method(args.method)
    names = ["method", *(h.name for h in REGULARIZERS[regulariser].hyperparameters), *MIXING_HYPERPARAMETERS.get(mixing, ())]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
