# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a hyperparameter search searches, free of any tuning library: its options ([`TuningArguments`], the `tuning`
group of the command line: a validation split held out of the training data, and a search on it) and its spaces. The
search itself, its trials, backends and outputs are [`smile_hf.run.hp_search`].

A space is `{name: dimension}`, a dimension `{"type": "float" | "int", "low", "high", "log"}` or `{"type":
"categorical", "choices": [...]}` (the form of `Regularizer.search_space()`). The default space of a method
([`default_search_space`]) is its regulariser's declared space, the alpha of its mixing, and the shared learning
rate and weight decay; `--hp_space space.json` replaces it ([`load_search_space`]). [`suggest`] draws a point with
an Optuna trial, [`ray_space`] translates a space for Ray Tune, [`apply_values`] sets a point on the arguments.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .methods import REGULARIZERS
from .mixing import MIXING_HYPERPARAMETERS

VALIDATION_SOURCES = ("auto", "carve", "dataset")
HP_SEARCH_BACKENDS = ("optuna", "ray")
HP_SEARCH_OBJECTIVES = ("accuracy", "loss")
SEARCH_ONLY_FIELDS = ("hp_search_trials", "hp_search_backend", "hp_search_rerun", "ray_address", "ray_resources_per_trial")
"""The options that change how the search runs, not the model trained with its best values (left out of
`run_config.json`)."""


@dataclass
class TuningArguments:
    """A validation split held out of the training data, and a hyperparameter search selecting on it (the fields
    [`~smile_hf.run.DataTrainingArguments`] inherits; the search runs in [`smile_hf.run.hp_search`])."""

    validation_source: str = field(
        default="auto",
        metadata={"help": "Where the validation split (--hp_search_trials, --calibration) comes from. dataset: the "
                  "--dataset preset's own validation split (fgvc_aircraft, flowers102), the trials train on the "
                  "training data without it and the final run on all of it (without it with --calibration); carve: "
                  "held out of the training data; auto: dataset where the preset has one and neither "
                  "--validation_split_fraction / --validation_samples_per_class nor a training subset "
                  "(--train_samples_per_class, --max_train_samples) is given, else carve.",
                  "choices": list(VALIDATION_SOURCES)},
    )  # fmt: skip
    validation_split_fraction: float | None = field(
        default=None,
        metadata={"help": "Hold this fraction of each class of the training data out as a validation split (at least "
                  "1 image per class; default 0.2 when a split is needed: --hp_search_trials, --calibration). "
                  "Given, the split is carved even where the dataset has its own."},
    )  # fmt: skip
    validation_samples_per_class: int | None = field(
        default=None,
        metadata={"help": "Hold this many images of each class of the training data out as a validation split "
                  "(instead of --validation_split_fraction; carved even where the dataset has its own)."},
    )  # fmt: skip
    hp_search_trials: int = field(
        default=0,
        metadata={"help": "Search the method's hyperparameters (and the learning rate, weight decay) with this many "
                  "trials on the validation split, then train once with the best values and evaluate. 0: no search."},
    )  # fmt: skip
    hp_search_objective: str = field(
        default="accuracy",
        metadata={"help": "What the search selects on, on the validation split: top-1 accuracy (maximised) or the "
                  "loss (minimised).", "choices": list(HP_SEARCH_OBJECTIVES)},
    )  # fmt: skip
    hp_search_backend: str = field(
        default="optuna",
        metadata={"help": "optuna: in this process, the study stored in <output_dir>/hp_search.db (a rerun resumes "
                  "it); ray: Ray Tune trials on the cluster of --ray_address / RAY_ADDRESS.",
                  "choices": list(HP_SEARCH_BACKENDS)},
    )  # fmt: skip
    hp_space: str | None = field(
        default=None,
        metadata={"help": "A JSON file of the search space, replacing the default one: {name: {\"type\": \"float\" | "
                  "\"int\", \"low\", \"high\", \"log\"} | {\"type\": \"categorical\", \"choices\": [...]}}."},
    )  # fmt: skip
    hp_search_rerun: bool = field(
        default=False, metadata={"help": "Start the stored search afresh instead of resuming it (or reusing it when done)."}
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "The Ray cluster of --hp_search_backend ray (default: RAY_ADDRESS, else local)."}
    )
    ray_resources_per_trial: str | None = field(
        default=None, metadata={"help": "Resources of one Ray trial, e.g. cpu=4,gpu=1 (default: cpu=1)."}
    )


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
    space = dict(REGULARIZERS[args.regularizer].search_space())
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
    own = [h.name for h in REGULARIZERS[args.regularizer].hyperparameters]
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
