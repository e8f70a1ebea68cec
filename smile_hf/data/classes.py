# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Evaluating a trained model on data of its classes: [`align_to_model_classes`] gives the data the model's label
ids, matched by class name, so that a validation folder holding only some of the model's classes (one class had no
image in it, say) is evaluated on those classes."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from datasets import ClassLabel, Dataset

from .errors import DataError
from .prepare import PreparedData

logger = logging.getLogger(__name__)


def _relabelled(split: Dataset, label_column: str, ids: list[int], names: list[str]) -> Dataset:
    """`split` with label `i` replaced by `ids[i]`, a `ClassLabel` of `names`, and its transform (if any) kept."""
    transform = (split.format or {}).get("format_kwargs", {}).get("transform")
    plain = split.with_format(None)
    features = plain.features.copy()
    features[label_column] = ClassLabel(names=names)
    relabelled = plain.map(
        lambda batch: {label_column: [ids[label] for label in batch[label_column]]},
        batched=True, features=features, desc="Matching the classes to the model's",
    )  # fmt: skip
    if transform is not None:
        relabelled.set_transform(transform)
    return relabelled


def align_to_model_classes(data: PreparedData, id2label: Mapping[int, str]) -> list[str]:
    """Give `data` (in place) the label ids and class names of a trained model whose classes are `id2label`,
    matching classes by name; return the model's classes the data has no example of (logged as a note).

    Data of exactly the model's classes is left as it is. Data with a class the model does not have is a
    [`DataError`] naming it: the model cannot be scored on a class it cannot predict.
    """
    model_names = [str(id2label[i]) for i in range(len(id2label))]
    if data.label_names == model_names:
        return []
    unknown = [name for name in data.label_names if name not in model_names]
    if unknown:
        raise DataError(
            f"The data has {len(unknown)} class(es) the model does not have: {unknown[:10]} (the model's classes: "
            f"{model_names[:10]}{' ...' if len(model_names) > 10 else ''}); evaluate on data of the model's classes."
        )
    ids = [model_names.index(name) for name in data.label_names]
    data.train = _relabelled(data.train, data.label_column, ids, model_names)
    data.eval = _relabelled(data.eval, data.label_column, ids, model_names)
    data.label_names = model_names
    missing = [name for name in model_names if name not in {model_names[i] for i in ids}]
    if missing:
        logger.warning(
            f"The data has {len(ids)} of the model's {len(model_names)} classes (none of {missing[:10]}): evaluating "
            "on those, each folder's class matched to the model's label id by name."
        )
    return missing
