# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""A validation split held out of the training data: what a hyperparameter search selects on and what temperature
scaling is fitted on, so that neither ever looks at the evaluation split. It is carved from the training data
([`carve_validation`]), or it is a dataset's own validation split ([`own_validation_split`]).

The split is stratified and seeded: of every class, `k` examples (drawn with the seed) are held out, where `k` is
`--validation_samples_per_class`, else `--validation_split_fraction` of the class rounded, at least 1; at least one
example of each class stays for training. Few-shot data keep this rule: with 3 images per class, 1 is held out and
2 train.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from datasets import ClassLabel, Dataset

from .errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_VALIDATION_FRACTION = 0.2
"""The fraction of each class held out when neither `--validation_split_fraction` nor
`--validation_samples_per_class` is given (at least one example of every class)."""


@dataclass
class ValidationSplit:
    """What the held-out validation split is (logged, and written into `results.json`, `hp_search.json` and the
    model card).

    Attributes:
        examples (`int`): its size.
        train_examples (`int`): the training examples left.
        min_per_class / max_per_class (`int`): the fewest / most examples of one class held out.
        fraction (`float`, *optional*), samples_per_class (`int`, *optional*): the rule asked for.
        seed (`int`, *optional*): the seed of the draw (`None` for a dataset's own split).
        source (`str`): `"carved"` (held out of the training data) or `"dataset"` (the dataset's own split).
        split_name (`str`, *optional*): the name of the dataset's own split.
        final_train_examples (`int`, *optional*): the examples the final run trains on when they are more than
            `train_examples` (a dataset's own split, trained on after the search).
    """

    examples: int
    train_examples: int
    min_per_class: int
    max_per_class: int
    fraction: float | None
    samples_per_class: int | None
    seed: int | None
    source: str = "carved"
    split_name: str | None = None
    final_train_examples: int | None = None

    def describe(self, items: str = "images") -> str:
        """One line: `"30 images held out of the training data (3 per class, seed 0); 70 left to train on"`, or
        `"the dataset's own `validation` split, 30 images (3 per class); 70 training images without it"`; `items`
        names the examples (`"texts"` for text data)."""
        per_class = (
            f"{self.min_per_class}" if self.min_per_class == self.max_per_class
            else f"{self.min_per_class}-{self.max_per_class}"
        )  # fmt: skip
        if self.source == "dataset":
            final = f" (the final run trains on all {self.final_train_examples})" if self.final_train_examples else ""
            return (
                f"the dataset's own `{self.split_name}` split, {self.examples} {items} ({per_class} per class); "
                f"{self.train_examples} training {items} without it{final}"
            )
        return (
            f"{self.examples} {items} held out of the training data ({per_class} per class, seed {self.seed}); "
            f"{self.train_examples} left to train on"
        )

    def card_text(self, items: str = "images") -> str:
        """[`describe`] and whether the final model trained on the split (the model card's words)."""
        if self.final_train_examples:
            return f"{self.describe(items)}; the search's trials never trained on them, the final model did"
        return f"{self.describe(items)}; the model never trained on them"

    def to_dict(self, items: str = "images") -> dict:
        return {**asdict(self), "description": self.describe(items)}


def held_out_counts(
    class_sizes: np.ndarray, fraction: float | None, samples_per_class: int | None, class_names: list[str] | None = None
) -> np.ndarray:
    """How many examples of each class (of sizes `class_sizes`) to hold out: `samples_per_class`, else
    `round(fraction * size)`, at least 1 and at most `size - 1`. A class of one example is a [`DataError`] naming
    it (by `class_names`, in the order of `class_sizes`, when given)."""
    if fraction is not None and samples_per_class is not None:
        raise DataError("Pass --validation_split_fraction or --validation_samples_per_class, not both.")
    if samples_per_class is not None and samples_per_class < 1:
        raise DataError(f"--validation_samples_per_class must be >= 1, got {samples_per_class}.")
    if samples_per_class is None:
        fraction = DEFAULT_VALIDATION_FRACTION if fraction is None else fraction
        if not 0.0 < fraction < 1.0:
            raise DataError(f"--validation_split_fraction must be in (0, 1), got {fraction}.")
        wanted = np.maximum(1, np.rint(fraction * class_sizes).astype(int))
    else:
        wanted = np.full_like(class_sizes, samples_per_class)
    if (class_sizes < 2).any():
        single = np.flatnonzero(class_sizes < 2)
        names = [class_names[i] if class_names is not None else str(i) for i in single]
        raise DataError(
            f"A validation split held out of the training data needs at least 2 training examples of every class "
            f"(one to hold out, one to train on); {len(single)} class(es) have 1: {names[:10]}"
            f"{' ...' if len(names) > 10 else ''}; add training images of them, or use more training examples "
            "(--train_samples_per_class 2 or more)."
        )
    return np.minimum(wanted, class_sizes - 1)


def carve_validation(
    dataset: Dataset,
    label_column: str,
    seed: int,
    fraction: float | None = None,
    samples_per_class: int | None = None,
) -> tuple[Dataset, Dataset, ValidationSplit]:
    """Split `dataset` into (train, validation), stratified by `label_column` with [`held_out_counts`] examples of
    each class drawn with `seed`; both keep the original order. Return them and their [`ValidationSplit`]."""
    labels = np.asarray(dataset[label_column])
    classes, sizes = np.unique(labels, return_counts=True)
    feature = dataset.features[label_column]
    names = [feature.int2str(int(c)) if isinstance(feature, ClassLabel) else str(c) for c in classes]
    counts = held_out_counts(sizes, fraction, samples_per_class, names)
    rng = np.random.default_rng(seed)
    held = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, counts)]
    held_out = np.sort(np.concatenate(held))
    mask = np.ones(len(labels), dtype=bool)
    mask[held_out] = False
    train, validation = dataset.select(np.flatnonzero(mask).tolist()), dataset.select(held_out.tolist())
    split = ValidationSplit(
        examples=len(validation), train_examples=len(train), min_per_class=int(counts.min()),
        max_per_class=int(counts.max()), fraction=fraction, samples_per_class=samples_per_class, seed=seed,
    )  # fmt: skip
    if samples_per_class is not None and (counts < samples_per_class).any():
        logger.warning(f"--validation_samples_per_class {samples_per_class}: some classes have too few examples; "
                       "at least one of each stays for training.")  # fmt: skip
    return train, validation, split


def own_validation_split(
    validation: Dataset, train: Dataset, label_column: str, split_name: str, final_train_examples: int | None = None
) -> ValidationSplit:
    """The [`ValidationSplit`] of a dataset's own validation split `split_name` (`validation`), beside the training
    data `train` without it; `final_train_examples`: what the final run trains on, when it is more than `train`."""
    sizes = np.unique(np.asarray(validation[label_column]), return_counts=True)[1]
    return ValidationSplit(
        examples=len(validation), train_examples=len(train), min_per_class=int(sizes.min()),
        max_per_class=int(sizes.max()), fraction=None, samples_per_class=None, seed=None, source="dataset",
        split_name=split_name, final_train_examples=final_train_examples,
    )  # fmt: skip
