# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Search spaces of a hyperparameter search, free of any tuning library.

A space is `{name: dimension}`, a dimension `{"type": "float" | "int", "low", "high", "log"}` or `{"type":
"categorical", "choices": [...]}` (the form of `TransferMethod.search_space()`). The default space of a method
([`default_search_space`]) is its regulariser's declared space, the alpha of its mixing, and the shared learning
rate and weight decay; `--hp_space space.json` replaces it ([`load_search_space`]). [`suggest`] draws a point with
an Optuna trial, [`ray_space`] translates a space for Ray Tune, [`apply_values`] sets a point on the arguments.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .methods import METHODS
from .mixing import MIXING_HYPERPARAMETERS

MIXING_ALPHA_RANGE = (0.05, 2.0)
"""The search range (log scale) of `mixup_alpha` / `cutmix_alpha`: from nearly no mixing to Beta(2, 2)."""
LEARNING_RATE_FACTOR = 10.0
"""The default search range of the learning rate: the configured one divided and multiplied by this (log scale)."""
WEIGHT_DECAY_RANGE = (1e-6, 1e-2)
"""The default search range (log scale) of the weight decay."""
SHARED_HYPERPARAMETERS = ("learning_rate", "weight_decay", "backbone_lr_multiplier", "warmup_ratio")
"""Training arguments of every method a space file may search besides the method's own."""


def default_search_space(args: Any) -> dict[str, dict[str, Any]]:
    """The default space of `args.method` (a `SmileTrainingArguments`): the regulariser's `search_space()`, the
    mixing's alpha (if the method mixes), `learning_rate` over [lr / 10, lr x 10] and `weight_decay` over
    [`WEIGHT_DECAY_RANGE`], the last three on a log scale."""
    space = dict(METHODS[args.regularizer].search_space())
    for name in MIXING_HYPERPARAMETERS.get(args.mixing, ()):
        space[name] = {"type": "float", "low": MIXING_ALPHA_RANGE[0], "high": MIXING_ALPHA_RANGE[1], "log": True}
    lr = float(args.learning_rate)
    space["learning_rate"] = {"type": "float", "low": lr / LEARNING_RATE_FACTOR, "high": lr * LEARNING_RATE_FACTOR,
                              "log": True}  # fmt: skip
    space["weight_decay"] = {"type": "float", "low": WEIGHT_DECAY_RANGE[0], "high": WEIGHT_DECAY_RANGE[1], "log": True}
    return space


def searchable_names(args: Any) -> list[str]:
    """Every name a space of `args.method` may hold: the regulariser's declared hyperparameters, the mixing's alpha,
    [`SHARED_HYPERPARAMETERS`]."""
    own = [h.name for h in METHODS[args.regularizer].hyperparameters]
    return sorted({*own, *MIXING_HYPERPARAMETERS.get(args.mixing, ()), *SHARED_HYPERPARAMETERS})


def check_dimension(name: str, dimension: Any) -> None:
    """Raise a one-line `ValueError` unless `dimension` is a valid dimension (see the module's docstring)."""
    form = ('{"type": "float" | "int", "low": L, "high": H, "log": false} or {"type": "categorical", "choices": '
            "[...]}")  # fmt: skip
    if not isinstance(dimension, dict) or dimension.get("type") not in ("float", "int", "categorical"):
        raise ValueError(f"search space entry '{name}' must be {form}, got {dimension!r}.")
    if dimension["type"] == "categorical":
        if not isinstance(dimension.get("choices"), list) or not dimension["choices"]:
            raise ValueError(f"search space entry '{name}': a categorical dimension needs a non-empty list 'choices'.")
        return
    low, high = dimension.get("low"), dimension.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise ValueError(f"search space entry '{name}' needs numbers low < high, got low={low!r}, high={high!r}.")
    if dimension.get("log") and low <= 0:
        raise ValueError(f"search space entry '{name}': a log scale needs low > 0, got {low}.")


def load_search_space(path: str, args: Any) -> dict[str, dict[str, Any]]:
    """The space of the JSON file `path` (it replaces the default one), checked: an unknown name is one
    `ValueError` naming the valid ones ([`searchable_names`]), a malformed entry one naming the form."""
    if not os.path.isfile(path):
        raise ValueError(f"--hp_space {path}: no such file.")
    with open(path, encoding="utf-8") as f:
        try:
            space = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"--hp_space {path} is not valid JSON: {error}.") from error
    if not isinstance(space, dict) or not space:
        raise ValueError(f"--hp_space {path} must hold a non-empty JSON object {{name: dimension}}.")
    valid = searchable_names(args)
    unknown = sorted(set(space) - set(valid))
    if unknown:
        raise ValueError(
            f"--hp_space {path}: unknown hyperparameter(s) {unknown} for --method {args.method}; valid: {', '.join(valid)}."
        )
    for name, dimension in space.items():
        check_dimension(name, dimension)
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A point of `space` drawn by an Optuna `trial`."""
    values = {}
    for name, d in space.items():
        if d["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, d["choices"])
        elif d["type"] == "int":
            values[name] = trial.suggest_int(name, int(d["low"]), int(d["high"]), log=bool(d.get("log")))
        else:
            values[name] = trial.suggest_float(name, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
    return values


def ray_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`space` as a Ray Tune `param_space` (`tune.choice`, `tune.(q)loguniform`, `tune.uniform`, `tune.randint`)."""
    from ray import tune

    converted = {}
    for name, d in space.items():
        if d["type"] == "categorical":
            converted[name] = tune.choice(d["choices"])
        elif d["type"] == "int":
            converted[name] = (tune.lograndint if d.get("log") else tune.randint)(int(d["low"]), int(d["high"]) + 1)
        else:
            converted[name] = (tune.loguniform if d.get("log") else tune.uniform)(float(d["low"]), float(d["high"]))
    return converted


def apply_values(args: Any, values: dict[str, Any]) -> None:
    """Set every value of `values` on `args` (a `SmileTrainingArguments`; checked again when training starts)."""
    for name, value in values.items():
        setattr(args, name, value)
