# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The options of the validation split held out of the training data and of the hyperparameter search on it (the
fields [`DataTrainingArguments`] inherits; see `smile_hf.run.hp_search`)."""

from __future__ import annotations

from dataclasses import dataclass, field

VALIDATION_SOURCES = ("auto", "carve", "dataset")
HP_SEARCH_BACKENDS = ("optuna", "ray")
HP_SEARCH_OBJECTIVES = ("accuracy", "loss")
SEARCH_ONLY_FIELDS = ("hp_search_trials", "hp_search_backend", "hp_search_rerun", "ray_address", "ray_resources_per_trial")
"""The options that change how the search runs, not the model trained with its best values (left out of
`run_config.json`)."""


@dataclass
class TuningArguments:
    """A validation split held out of the training data, and a hyperparameter search selecting on it."""

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
