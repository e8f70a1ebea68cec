# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""`--validation_source`: whether the validation split of a search and of calibration is the `--dataset` preset's
own validation split (`DatasetPreset.validation_split`) or one carved from the training data
([`smile_hf.data.carve_validation`])."""

from __future__ import annotations

import logging

from ..data import DATASET_PRESETS, carve_validation, get_preset
from ..tuning import VALIDATION_SOURCES
from .arguments import DataTrainingArguments, InputError

logger = logging.getLogger(__name__)


def validation_source(data_args: DataTrainingArguments) -> str:
    """Where a validation split comes from: `"dataset"` (the preset's own validation split) or `"carve"` (held out
    of the training data). `--validation_source auto` is `"dataset"` where the preset has one and the run asks for
    no carving (`--validation_split_fraction`, `--validation_samples_per_class`) and no training subset
    (`--train_samples_per_class`, `--max_train_samples`), else `"carve"`."""
    if data_args.validation_source != "auto":
        return data_args.validation_source
    own = data_args.dataset is not None and get_preset(data_args.dataset).validation_split is not None
    carving = data_args.validation_split_fraction is not None or data_args.validation_samples_per_class is not None
    subset = data_args.train_samples_per_class is not None or data_args.max_train_samples is not None
    return "dataset" if own and not carving and not subset else "carve"


def check_validation_source(data_args: DataTrainingArguments) -> None:
    """An [`InputError`] for a `--validation_source` that is unknown, or `dataset` where there is no preset with its
    own validation split, or with carving or training-subset options."""
    source = data_args.validation_source
    if source not in VALIDATION_SOURCES:
        raise InputError(f"--validation_source must be one of {', '.join(VALIDATION_SOURCES)}, got '{source}'.")
    if source != "dataset":
        return
    owning = sorted(name for name, preset in DATASET_PRESETS.items() if preset.validation_split is not None)
    if data_args.dataset is None or get_preset(data_args.dataset).validation_split is None:
        raise InputError(
            f"--validation_source dataset: {data_args.dataset or 'image folders'} has no validation split of its own "
            f"(the presets with one: {', '.join(owning)}); use --validation_source carve."
        )
    options = ("validation_split_fraction", "validation_samples_per_class", "train_samples_per_class",
               "max_train_samples")  # fmt: skip
    given = [f"--{name}" for name in options if getattr(data_args, name) is not None]
    if given:
        raise InputError(
            f"--validation_source dataset validates on the dataset's own split with the full training data; "
            f"{', '.join(given)} carve(s) or subset(s) it: drop {'them' if len(given) > 1 else 'it'}, or use "
            "--validation_source carve."
        )


def hold_out_validation(data, data_args: DataTrainingArguments, seed: int, own: bool) -> None:
    """Set `data.validation` and `data.validation_split`, and log the split: the dataset's own split, already loaded
    where `own`, else one carved out of `data.train` ([`carve_validation`] with `--validation_split_fraction` /
    `--validation_samples_per_class` and `seed`)."""
    if not own:
        data.train, data.validation, data.validation_split = carve_validation(
            data.train, data.label_column, seed, data_args.validation_split_fraction,
            data_args.validation_samples_per_class,
        )  # fmt: skip
    logger.info(f"Validation split: {data.validation_split.describe(data.items)}")
