# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The training recipe each dataset preset carries ([`Recipe`]): what `run_smile.py --dataset NAME` trains with when
no option says otherwise ([`smile_hf.run.recipes`] applies it; `SmileTrainer` in Python never reads it).

- The SMILE paper's datasets: its recipe, the reference optimisation (`reference_recipe`: SGD Nesterov 0.9, lr
  0.01, weight decay 1e-4, batch 48, no clipping, lr x0.1 once at step 6666) for 9,000 steps (the reference's
  `max_iters`). For CUB-200-2011, Stanford Cars and FGVC-Aircraft also the baselines' weights and the resize of the
  reference's `task_config.ini`, applied with the reference optimisation only.
- The other Hub presets (Flowers-102, Oxford-IIIT Pet, DTD, CIFAR-100): the same recipe, stated as not tuned for
  them. It is the recipe the paper fine-tunes an ImageNet backbone with on each of its five datasets, and it keeps
  the presets comparable; the stock `TrainingArguments` (AdamW at 5e-5 for 3 epochs) is no recipe for transfer
  (25.7% top-1 on `digits` alone, against 99.4% with its recipe, the reference optimisation for 500 steps).
- `digits`: the offline demo's recipe (`make demo`): the reference optimisation for 500 steps, no flip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAPER_STEPS = 9000
"""The reference's `max_iters` (`smile_hf.methods.smile.REFERENCE_TOTAL_STEPS`)."""


@dataclass(frozen=True)
class Recipe:
    """A preset's default recipe: argument values (by the name of a field of `SmileTrainingArguments` or of the run
    script's `DataTrainingArguments`), each used only where the user did not set that argument.

    Args:
        origin (`str`): where the values come from, as the log line, `results.json` and the model card say it.
        values (`dict[str, Any]`): the recipe's arguments (e.g. `{"reference_recipe": True, "max_steps": 9000}`).
        reference_values (`dict[str, Any]`): arguments used only when the reference optimisation is on
            (`reference_recipe` set by the user or by `values`): the per-dataset weights of the reference's baselines
            and its resize.
    """

    origin: str
    values: dict[str, Any] = field(default_factory=dict)
    reference_values: dict[str, Any] = field(default_factory=dict)


PAPER_VALUES = {"reference_recipe": True, "max_steps": PAPER_STEPS}


def paper_recipe(dataset: str, **reference_values: Any) -> Recipe:
    """The SMILE paper's recipe for one of its datasets, with that dataset's reference values (if any)."""
    where = " and the baselines' weights and resize of its task_config.ini" if reference_values else ""
    return Recipe(
        f"the SMILE paper's recipe for {dataset}: the reference optimisation for {PAPER_STEPS:,} steps{where}",
        PAPER_VALUES, reference_values,
    )  # fmt: skip


UNTUNED_RECIPE = Recipe(
    f"the SMILE paper's recipe (the reference optimisation for {PAPER_STEPS:,} steps), not tuned for this dataset",
    PAPER_VALUES,
)
"""The recipe of the presets the paper did not train on: its recipe, stated as untuned."""

DEMO_RECIPE = Recipe(
    "the offline demo's recipe (make demo): the reference optimisation for 500 steps, no horizontal flip (digits "
    "are not mirror-symmetric)",
    {"reference_recipe": True, "max_steps": 500, "random_horizontal_flip": False},
)
"""The recipe of `--dataset digits`: what `examples/compare_methods.py` without arguments trains with."""

# The reference's task_config.ini (lixingjian/SMILE): alpha_l2sp, alpha_delta, alpha_rifle (re-initialisations),
# alpha_bss and keep_aspect per dataset.
CUB_RECIPE = paper_recipe(
    "CUB-200-2011", l2sp_alpha=0.001, delta_alpha=0.01, rifle_num_reinits=2, bss_lambda=0.001, keep_aspect=True
)
STANFORD_CARS_RECIPE = paper_recipe(
    "Stanford Cars", l2sp_alpha=0.0001, delta_alpha=0.001, rifle_num_reinits=4, bss_lambda=0.001, keep_aspect=False
)
FGVC_AIRCRAFT_RECIPE = paper_recipe(
    "FGVC-Aircraft", l2sp_alpha=0.001, delta_alpha=0.001, rifle_num_reinits=4, bss_lambda=0.001, keep_aspect=False
)
