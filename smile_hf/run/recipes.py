# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The recipe of a `--dataset` preset applied to a run's parsed arguments, by [`smile_hf.recipes.apply_recipe`] (the
code and the rule of every recipe: an option the user gave wins), and recorded in an [`AppliedRecipe`] for the log
line, `results.json` and the model card. Only the run scripts apply a preset's recipe."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields, replace
from typing import Any

from ..config import NOT_SET_FIELDS, SmileTrainingArguments
from ..data import get_preset
from ..recipes import REFERENCE_RECIPE, AppliedRecipe, apply_recipe

SUMMARY_FIELDS = (
    "optim", "optim_args", "learning_rate", "weight_decay", "per_device_train_batch_size", "max_steps",
    "num_train_epochs", "lr_scheduler_type", "lr_step_fraction", "max_grad_norm",
)  # fmt: skip
"""The training arguments every recipe line and record states (optimiser, lr, batch, steps, schedule), as resolved."""


def apply_preset_recipe(
    data_args: Any, training_args: SmileTrainingArguments, given: Collection[str]
) -> SmileTrainingArguments:
    """Apply the recipe of `data_args.dataset`'s preset (`data_args`: the run's `DataTrainingArguments`) to the
    arguments the user did not give (`given`: the options of the command line, or the keys of a `.json` / `.yaml`
    file), record it as `data_args.recipe` (an [`AppliedRecipe`]) and return the training arguments: rebuilt when the
    recipe changes one, so that the reference recipe, when the preset turns it on, fills the optimisation fields the
    user left unset, through the same [`apply_recipe`]. Nothing is applied without a preset, or without training
    (`--do_train False`)."""
    data_args.recipe = None
    if data_args.dataset is None or get_preset(data_args.dataset).recipe is None:
        return training_args
    if "do_train" in given and not training_args.do_train:
        return training_args
    preset = get_preset(data_args.dataset)
    recipe = preset.recipe
    training_names = {f.name for f in fields(training_args)}
    try:
        applied = apply_recipe(recipe, given, data_args, training_args)
    except ValueError as error:
        raise ValueError(f"The recipe of preset '{preset.name}': {error}") from error
    if applied.keys() & training_names:  # rebuilt with the unset optimisation fields back to "not set"
        unset = {name: None for name in NOT_SET_FIELDS if name not in given}
        training_args = replace(training_args, **unset)
    values = {name: getattr(training_args, name) for name in SUMMARY_FIELDS}
    values.pop("num_train_epochs" if values["max_steps"] > 0 else "max_steps")
    if values["lr_step_fraction"] is None:
        values.pop("lr_step_fraction")
    for name in recipe.wanted(training_args.reference_recipe):
        if name not in SUMMARY_FIELDS:
            values[name] = getattr(training_args if name in training_names else data_args, name)
    user_set = {*recipe.overridden_by(given, training_args.reference_recipe), *REFERENCE_RECIPE.overridden_by(given)}
    data_args.recipe = AppliedRecipe(preset.name, recipe.name, recipe.origin, applied, sorted(user_set), values)
    return training_args
