# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Class ids of a dataset's label column ([`encode_labels`]), for image and text data alike."""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from .errors import DataError


def _encode_strings(split: Dataset, label_column: str, names: list[str]) -> Dataset:
    """`split` with its string `label_column` replaced by the ids of `names` as a `ClassLabel` (mapped: `datasets`
    before 3.x cannot cast strings to a `ClassLabel`)."""
    index = {name: i for i, name in enumerate(names)}
    features = split.features.copy()
    features[label_column] = ClassLabel(names=names)
    return split.map(
        lambda batch: {label_column: [index[value] for value in batch[label_column]]}, batched=True, features=features
    )


def encode_labels(splits: DatasetDict, label_column: str) -> tuple[DatasetDict, list[str]]:
    """Make `label_column` integer class ids in every split and return the class names.

    `ClassLabel` columns keep their names; string labels become classes sorted by name (taken from the train split);
    plain integer labels are named by their value, with `max + 1` classes.
    """
    feature = splits["train"].features[label_column]
    if isinstance(feature, ClassLabel):
        return splits, list(feature.names)
    train_values = list(splits["train"][label_column])
    if train_values and isinstance(train_values[0], str):
        names = sorted(set(train_values))
        for split_name, split in splits.items():
            unknown = sorted(set(split[label_column]) - set(names))
            if unknown:
                raise DataError(f"The {split_name} split has labels not seen in train: {unknown[:5]}.")
        return DatasetDict({k: _encode_strings(v, label_column, names) for k, v in splits.items()}), names
    if train_values and not isinstance(train_values[0], (int, np.integer)):
        raise DataError(
            f"Column '{label_column}' holds {type(train_values[0]).__name__} values, not class labels; "
            "pass --label_column to name the column with the classes."
        )
    num_labels = max(int(max(split[label_column], default=0)) for split in splits.values()) + 1
    return splits, [str(i) for i in range(num_labels)]
