# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The recipe of a `--dataset` preset ([`smile_hf.data.recipes`]) applied to a run's parsed arguments: each value
only where the user set nothing, recorded in [`PresetRecipe`] for the log line, `results.json` and the model card.
Only the run scripts apply it: `SmileTrainingArguments` built in Python keep the `TrainingArguments` defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..config import RECIPE_FIELDS, SmileTrainingArguments
from ..data import get_preset
from ..methods import METHODS, declared_hyperparameters

YIELDS_TO = {"max_steps": ("num_train_epochs",)}
"""A recipe value left out when the user set another option that means the same: a number of epochs replaces the
recipe's number of steps (the `Trainer` would let `max_steps` win)."""

SUMMARY_FIELDS = (
    "optim", "optim_args", "learning_rate", "weight_decay", "per_device_train_batch_size", "max_steps",
    "num_train_epochs", "lr_scheduler_type", "lr_step_fraction", "max_grad_norm",
)  # fmt: skip
"""The training arguments every recipe line and record states (optimiser, lr, batch, steps, schedule), as resolved."""


@dataclass
class PresetRecipe:
    """The recipe a run of `--dataset NAME` trained with.

    Attributes:
        dataset (`str`): the preset.
        origin (`str`): where its values come from (the preset's [`Recipe.origin`]).
        applied (`dict`): the values the recipe set (arguments the user did not set).
        user_set (`list[str]`): the options the user set in place of the recipe's (their values were kept).
        values (`dict`): the resolved optimiser, lr, batch, steps and schedule ([`SUMMARY_FIELDS`]) and every
            argument of the recipe, as the run uses them.
    """

    dataset: str
    origin: str
    applied: dict[str, Any] = field(default_factory=dict)
    user_set: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The one log line: the preset, the origin, the values used, and which of them the user set."""
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={_show(v)}" for k, v in self.values.items()
        )
        mine = f"; set by your options: {', '.join(self.user_set)}" if self.user_set else ""
        return f"Recipe of --dataset {self.dataset} ({self.origin}): {values}{mine}. Any option you pass replaces it."

    def to_dict(self) -> dict[str, Any]:
        """The `recipe` entry of `results.json`."""
        return {"dataset": self.dataset, "origin": self.origin, "values": {k: _show(v) for k, v in self.values.items()},
                "applied": {k: _show(v) for k, v in self.applied.items()}, "user_set": list(self.user_set)}  # fmt: skip

    def card_text(self, regularizer: str) -> str:
        """The model card's sentence: the preset's recipe and what it set for a run of `regularizer` (the weights of
        other regularisers left out), and the options the user set instead."""
        own = {h.name for h in METHODS[regularizer].hyperparameters}
        others = set(declared_hyperparameters()) - own
        applied = ", ".join(f"`{k}`={_show(v)}" for k, v in self.applied.items() if k not in others)
        mine = [name for name in self.user_set if name not in others]
        text = f"Trained with the recipe of the `{self.dataset}` preset: {self.origin}"
        text += f" (it set {applied})" if applied else ""
        return text + (f"; set explicitly instead: {', '.join(f'`{n}`' for n in mine)}." if mine else ".")


def _show(value: Any) -> Any:
    """An argument's value as JSON and the log show it (enums by their value)."""
    return getattr(value, "value", value)


def explicit_names(given: set[str] | frozenset[str], names: set[str]) -> set[str]:
    """The argument names the options in `given` set: exact names (or spelt with dashes, `--learning-rate`),
    `no_<name>` (a boolean's negation) and the unique prefixes argparse accepts for a name (`--learning_r 0.1` sets
    `learning_rate`)."""
    found = set()
    for option in (option.replace("-", "_") for option in given):
        if option in names:
            found.add(option)
        elif option.startswith("no_") and option[3:] in names:
            found.add(option[3:])
        elif len(matches := [name for name in names if name.startswith(option)]) == 1:
            found.add(matches[0])
    return found


def apply_preset_recipe(
    data_args: Any, training_args: SmileTrainingArguments, given: set[str] | frozenset[str]
) -> SmileTrainingArguments:
    """Put the recipe of `data_args.dataset`'s preset (`data_args`: the run's `DataTrainingArguments`) into the
    arguments the user did not set (`given`: the options of the command line, or the keys of a `.json` / `.yaml`
    file), record it as `data_args.recipe` (a [`PresetRecipe`]) and return the training arguments (rebuilt when the recipe changes one, so that
    `reference_recipe` fills the optimisation fields the user left unset). The values of the recipe's
    `reference_values` are used only with the reference optimisation on. Nothing is applied without a preset, or
    without training (`--do_train False`)."""
    data_args.recipe = None
    if data_args.dataset is None or get_preset(data_args.dataset).recipe is None:
        return training_args
    data_names = {f.name for f in fields(data_args)}
    training_names = {f.name for f in fields(training_args)}
    explicit = explicit_names(given, data_names | training_names)
    if "do_train" in explicit and not training_args.do_train:
        return training_args
    preset = get_preset(data_args.dataset)
    recipe = preset.recipe
    reference = training_args.reference_recipe
    if "reference_recipe" not in explicit:
        reference = bool(recipe.values.get("reference_recipe", reference))
    wanted = {**recipe.values, **(recipe.reference_values if reference else {})}
    unknown = [name for name in wanted if name not in data_names | training_names]
    if unknown:
        raise ValueError(f"The recipe of preset '{preset.name}' names {unknown}, which are no arguments of a run.")
    replaced = {name for name in wanted if name in explicit or explicit & set(YIELDS_TO.get(name, ()))}
    applied = {name: value for name, value in wanted.items() if name not in replaced}
    recipe_names = {*wanted, *SUMMARY_FIELDS, *(n for names in YIELDS_TO.values() for n in names)}
    user_set = sorted(explicit & recipe_names)
    for name in data_names & set(applied):
        setattr(data_args, name, applied[name])
    changes = {name: value for name, value in applied.items() if name in training_names}
    if changes:  # the unset optimisation fields back to "not set": reference_recipe (or the stock default) fills them
        unset = {name: None for name in RECIPE_FIELDS if name not in explicit}
        training_args = replace(training_args, **unset, **changes)
    values = {name: getattr(training_args, name) for name in SUMMARY_FIELDS}
    values.pop("num_train_epochs" if values["max_steps"] > 0 else "max_steps")
    if values["lr_step_fraction"] is None:
        values.pop("lr_step_fraction")
    for name in (name for name in wanted if name not in SUMMARY_FIELDS):
        values[name] = getattr(data_args if name in data_names else training_args, name)
    data_args.recipe = PresetRecipe(preset.name, recipe.origin, applied, user_set, values)
    return training_args
