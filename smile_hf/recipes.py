# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Training recipes: named sets of argument values a run starts from ([`Recipe`]), all applied by one function,
[`apply_recipe`], with one rule: **an option the user gave wins** (over the recipe's value of that option, and over
the recipe's values that go with it: [`YIELDS_TO`], [`Recipe.requires`]).

- [`REFERENCE_RECIPE`] (`"reference"`): the optimisation of the SMILE reference (PaddlePaddle/Research,
  CV/SMILE/finetune.py): SGD Nesterov 0.9, lr 0.01, weight decay 1e-4, batch 48, no clipping, a constant learning
  rate multiplied by 0.1 once at iteration floor(2 * (9000 + 1000) / 3) = 6666 of 9000. `reference_recipe=True`
  applies it (in Python or as `--reference_recipe`), to the fields of [`SmileTrainingArguments`] left unset; what it
  set is recorded in `reference_recipe_applied`.
- The recipes of the dataset presets (`DatasetPreset.recipe`): what `smile-hf train --dataset NAME` trains with.
  They turn the reference recipe on and set the length of training:
  - the SMILE paper's datasets: the reference optimisation for 9,000 steps (the reference's `max_iters`); for
    CUB-200-2011, Stanford Cars and FGVC-Aircraft also the baselines' weights and the resize of the reference's
    `task_config.ini`, applied with the reference optimisation only;
  - the other Hub presets (Flowers-102, Oxford-IIIT Pet, DTD, CIFAR-100): the same recipe, stated as not tuned for
    them. It keeps the presets comparable; the stock `TrainingArguments` (AdamW at 5e-5 for 3 epochs) is no recipe for
    transfer (25.7% top-1 on `digits` alone, against 99.4% with its recipe);
  - `digits`: the offline demo's recipe (`make demo`): the reference optimisation for 500 steps, no flip.

The recipe a run used, and the options given instead of its values, are recorded ([`AppliedRecipe`]) in the log,
`results.json` and the model card. `SmileTrainingArguments` built in Python apply no preset recipe.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any

from .methods import REGULARIZERS, declared_hyperparameters
from .methods.smile import REFERENCE_TOTAL_STEPS

PAPER_STEPS = REFERENCE_TOTAL_STEPS
"""The reference's `max_iters`: 9000."""

REFERENCE_LR_STEP_FRACTION = (2 * (9000 + 1000) // 3) / REFERENCE_TOTAL_STEPS
"""Where the reference multiplies the learning rate by 0.1: iteration floor(2 * (9000 + 1000) / 3) of 9000."""

YIELDS_TO = {"max_steps": ("num_train_epochs",), "lr_step_fraction": ("lr_scheduler_type",)}
"""A recipe value is also left out when the user gave one of these options: a number of epochs replaces the recipe's
number of steps (the `Trainer` would let `max_steps` win), and a schedule the single learning-rate step of the
recipe's constant schedule."""


@dataclass(frozen=True)
class Recipe:
    """A named set of argument values, each used only where the user did not give that argument ([`apply_recipe`]).

    Args:
        name (`str`): the recipe's name (`"reference"`, `"demo"`, `"paper-cub200"`...).
        origin (`str`): where the values come from, as the log line, `results.json` and the model card say it.
        values (`dict[str, Any]`): argument values, by the name of a field of [`SmileTrainingArguments`] or of the
            run's `DataTrainingArguments` (e.g. `{"reference_recipe": True, "max_steps": 9000}`).
        reference_values (`dict[str, Any]`, *optional*): values used only when the reference recipe is on
            (`reference_recipe` given by the user or set by `values`): the per-dataset weights of the reference's
            baselines and its resize.
        requires (`dict[str, str]`, *optional*): a value used only where another argument holds this recipe's value
            (`{"optim_args": "optim"}`: SGD's momentum arguments go with SGD only).
    """

    name: str
    origin: str
    values: dict[str, Any] = field(default_factory=dict)
    reference_values: dict[str, Any] = field(default_factory=dict)
    requires: dict[str, str] = field(default_factory=dict)

    def wanted(self, reference: bool) -> dict[str, Any]:
        """The values to apply: `values`, and `reference_values` when `reference` (the reference recipe is on)."""
        return {**self.values, **(self.reference_values if reference else {})}

    def overridden_by(self, given: Collection[str], reference: bool = True) -> list[str]:
        """The options in `given` that replace values of this recipe: its arguments, and those they yield to."""
        wanted = self.wanted(reference)
        names = {*wanted, *(other for name in wanted for other in YIELDS_TO.get(name, ()))}
        return sorted(names & set(given))


def apply_recipe(recipe: Recipe, given: Collection[str], *targets: Any) -> dict[str, Any]:
    """Put the values of `recipe` into the fields of `targets` (dataclass instances: the training arguments, the
    data arguments) that the user did not give. The one rule of every recipe: a value is used unless the user gave
    that option (named in `given`), or an option it yields to ([`YIELDS_TO`]); a value the recipe `requires` to go
    with another is used only where that other one holds the recipe's value. The `reference_values` of a recipe are
    used when a target's `reference_recipe` is on once `values` are applied.

    Returns:
        `dict[str, Any]`: the values the recipe set.
    """
    owner = {f.name: target for target in reversed(targets) for f in fields(target)}
    reference = bool(recipe.values.get("reference_recipe") and "reference_recipe" not in given)
    reference = reference or any(getattr(target, "reference_recipe", False) is True for target in targets)
    wanted = recipe.wanted(reference)
    unknown = [name for name in wanted if name not in owner]
    if unknown:
        raise ValueError(f"Recipe '{recipe.name}' names {unknown}, which are no arguments of a run.")
    skipped = {name for name in wanted if name in given or set(YIELDS_TO.get(name, ())) & set(given)}
    applied = {}
    for name in sorted(wanted, key=lambda name: name in recipe.requires):  # what a value requires is set first
        other = recipe.requires.get(name)
        if name in skipped or (other is not None and _plain(getattr(owner[other], other)) != recipe.values[other]):
            continue
        setattr(owner[name], name, wanted[name])
        applied[name] = wanted[name]
    return applied


def _plain(value: Any) -> Any:
    """An argument's value as JSON and the log show it (enums by their value)."""
    return getattr(value, "value", value)


REFERENCE_RECIPE = Recipe(
    "reference",
    "the SMILE reference optimisation: SGD Nesterov 0.9, lr 0.01, weight decay 1e-4, no clipping, batch 48, lr x0.1 "
    "once at step 6666 of 9000",
    {
        "optim": "sgd",
        "optim_args": "momentum=0.9,nesterov=True",
        "learning_rate": 0.01,
        "weight_decay": 1e-4,
        "max_grad_norm": 0.0,
        "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 48,
        "lr_step_fraction": REFERENCE_LR_STEP_FRACTION,
    },
    requires={"optim_args": "optim"},
)
"""What `reference_recipe=True` puts into the fields of [`SmileTrainingArguments`] the user did not set."""

PAPER_VALUES = {"reference_recipe": True, "max_steps": PAPER_STEPS}


def paper_recipe(dataset: str, name: str, **reference_values: Any) -> Recipe:
    """The SMILE paper's recipe for one of its datasets, with that dataset's reference values (if any)."""
    where = " and the baselines' weights and resize of its task_config.ini" if reference_values else ""
    return Recipe(
        name,
        f"the SMILE paper's recipe for {dataset}: the reference optimisation for {PAPER_STEPS:,} steps{where}",
        PAPER_VALUES, reference_values,
    )  # fmt: skip


UNTUNED_RECIPE = Recipe(
    "paper-untuned",
    f"the SMILE paper's recipe (the reference optimisation for {PAPER_STEPS:,} steps), not tuned for this dataset",
    PAPER_VALUES,
)
"""The recipe of the presets the paper did not train on: its recipe, stated as untuned."""

STOCK_RECIPE = Recipe(
    "stock",
    "the stock TrainingArguments defaults, as transformers' text-classification example trains (AdamW, learning rate "
    "5e-5 with linear decay, 3 epochs, batch 8): no recipe is tuned for text",
)
"""The recipe of the text presets: no value of its own, so the run trains with the stock defaults."""

DEMO_RECIPE = Recipe(
    "demo",
    "the offline demo's recipe (make demo): the reference optimisation for 500 steps, no horizontal flip (digits "
    "are not mirror-symmetric)",
    {"reference_recipe": True, "max_steps": 500, "random_horizontal_flip": False},
)
"""The recipe of `--dataset digits`: what `examples/compare_methods.py` without arguments trains with."""

# The reference's task_config.ini (lixingjian/SMILE): alpha_l2sp, alpha_delta, alpha_rifle (re-initialisations),
# alpha_bss and keep_aspect per dataset.
CUB_RECIPE = paper_recipe(
    "CUB-200-2011", "paper-cub200", l2sp_alpha=0.001, delta_alpha=0.01, rifle_num_reinits=2, bss_lambda=0.001,
    keep_aspect=True,
)  # fmt: skip
STANFORD_CARS_RECIPE = paper_recipe(
    "Stanford Cars", "paper-stanford_cars", l2sp_alpha=0.0001, delta_alpha=0.001, rifle_num_reinits=4,
    bss_lambda=0.001, keep_aspect=False,
)  # fmt: skip
FGVC_AIRCRAFT_RECIPE = paper_recipe(
    "FGVC-Aircraft", "paper-fgvc_aircraft", l2sp_alpha=0.001, delta_alpha=0.001, rifle_num_reinits=4,
    bss_lambda=0.001, keep_aspect=False,
)  # fmt: skip


@dataclass
class AppliedRecipe:
    """The recipe a run of `--dataset NAME` trained with, as the log, `results.json` and the model card record it.

    Attributes:
        dataset (`str`): the preset.
        recipe (`str`): the recipe's [`Recipe.name`].
        origin (`str`): where its values come from ([`Recipe.origin`]).
        applied (`dict`): the values the recipe set (arguments the user did not set).
        user_set (`list[str]`): the options the user gave in place of the recipe's (their values were kept).
        values (`dict`): the resolved optimiser, lr, batch, steps and schedule, and every argument of the recipe, as
            the run uses them.
    """

    dataset: str
    recipe: str
    origin: str
    applied: dict[str, Any] = field(default_factory=dict)
    user_set: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The one log line: the preset, the origin, the values used, and which of them the user set."""
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={_plain(v)}" for k, v in self.values.items()
        )
        mine = f"; set by your options: {', '.join(self.user_set)}" if self.user_set else ""
        return f"Recipe of --dataset {self.dataset} ({self.origin}): {values}{mine}. Any option you pass replaces it."

    def to_dict(self) -> dict[str, Any]:
        """The `recipe` entry of `results.json`."""
        return {"dataset": self.dataset, "recipe": self.recipe, "origin": self.origin,
                "values": {k: _plain(v) for k, v in self.values.items()},
                "applied": {k: _plain(v) for k, v in self.applied.items()}, "user_set": list(self.user_set)}  # fmt: skip

    def card_text(self, regularizer: str) -> str:
        """The model card's sentence: the preset's recipe and what it set for a run of `regularizer` (the weights of
        other regularisers left out), and the options the user set instead."""
        own = {h.name for h in REGULARIZERS[regularizer].hyperparameters}
        others = set(declared_hyperparameters()) - own
        applied = ", ".join(f"`{k}`={_plain(v)}" for k, v in self.applied.items() if k not in others)
        mine = [name for name in self.user_set if name not in others]
        text = f"Trained with the recipe of the `{self.dataset}` preset: {self.origin}"
        text += f" (it set {applied})" if applied else ""
        return text + (f"; set explicitly instead: {', '.join(f'`{n}`' for n in mine)}." if mine else ".")
