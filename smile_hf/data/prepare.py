# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""From loaded splits to data ready for training: validation split, column and label checks, label encoding,
seeded few-shot and size-capped subsets, undecodable-image handling, and [`prepare_datasets`] / [`set_transforms`],
which put everything together.

Every problem is a [`DataError`], a one-line message that names what was expected and what was found, so that
a run script can report bad input before any training starts.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets

from .errors import DataError
from .labels import encode_labels
from .presets import (
    OWN_VALIDATION_KEY,
    DatasetPreset,
    DataSource,
    get_preset,
    load_image_folders,
    load_preset,
    resolved_revision,
)
from .scan import CORRUPT_IMAGE_POLICIES, handle_corrupt_images, without_image_decoding
from .transforms import INDEX_COLUMN, BatchTransform, ImageTransform, TransformConfig, max_image_pixels
from .validation import ValidationSplit, own_validation_split

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------------


SPLIT_INFO_NAME = "smile_hf_split.json"
"""A file beside a pair of train / evaluation image folders that says what their split is (written by
`scripts/prepare_mit_indoor67.py`): `{"name", "train_dir", "validation_dir", "official_split", "eval_split_role"}`
(the two folders named relative to the file's folder)."""


TRAINING_IMAGES_ROLE = (
    "the training images themselves: --validation_dir is --train_dir, so this is training accuracy, not a held-out "
    "estimate"
)
"""What the model card and `results.json` say the evaluation split is when `--validation_dir` is `--train_dir`."""


def local_data_source(train_dir: str, validation_dir: str | None) -> DataSource:
    """The [`DataSource`] of local image folders: named by the training folder, not an official split, unless a
    [`SPLIT_INFO_NAME`] file in their common parent describes exactly these two folders."""
    source = DataSource(name=os.path.basename(os.path.normpath(train_dir)), local=True, official_split=False)
    source.eval_split = "validation" if validation_dir else "train"
    source.eval_split_role = "a separate image folder" if validation_dir else ""
    if validation_dir is None:
        return source
    if os.path.realpath(validation_dir) == os.path.realpath(train_dir):
        logger.warning(
            f"--validation_dir is --train_dir ({validation_dir}): the validation accuracy is measured on the training "
            "images, not on held-out ones. Pass a separate folder, or leave --validation_dir out to hold out "
            "--train_val_split of the training images."
        )
        source.eval_split_role = TRAINING_IMAGES_ROLE
        return source
    parent = os.path.dirname(os.path.abspath(train_dir))
    info_path = os.path.join(parent, SPLIT_INFO_NAME)
    if not os.path.isfile(info_path) or os.path.dirname(os.path.abspath(validation_dir)) != parent:
        return source
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    folders = (os.path.basename(os.path.normpath(train_dir)), os.path.basename(os.path.normpath(validation_dir)))
    if (info.get("train_dir"), info.get("validation_dir")) != folders:
        return source
    source.name = str(info.get("name", source.name))
    source.official_split = bool(info.get("official_split", False))
    source.eval_split_role = str(info.get("eval_split_role", source.eval_split_role))
    return source


def split_off_validation(dataset: Dataset, fraction: float, seed: int, label_column: str) -> DatasetDict:
    """Carve a (stratified when possible) validation split off `dataset`."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--train_val_split must be in (0, 1) to carve a validation split, got {fraction}.")
    stratify = label_column if isinstance(dataset.features.get(label_column), ClassLabel) else None
    try:
        splits = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
    except ValueError:  # too few examples of some class to stratify
        splits = dataset.train_test_split(test_size=fraction, seed=seed)
    return DatasetDict(train=splits["train"], validation=splits["test"])


# ---------------------------------------------------------------------------------------------------------------------
# Columns and labels
# ---------------------------------------------------------------------------------------------------------------------


def check_columns(dataset: Dataset, image_column: str, label_column: str, where: str) -> None:
    """Raise a [`DataError`] naming the columns found unless both expected columns exist."""
    missing = [c for c in (image_column, label_column) if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"The {where} split has no column {', '.join(repr(m) for m in missing)}; found columns "
            f"{dataset.column_names}. Pass --image_column / --label_column to name the right ones."
        )


def check_label_range(dataset: Dataset, label_column: str, num_labels: int, where: str) -> None:
    """Raise a [`DataError`] if a label of `dataset` is not a class of a `num_labels`-way model."""
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if bad.size:
        raise DataError(
            f"The {where} split has {bad.size} label(s) outside the model's range 0..{num_labels - 1} "
            f"(first: label {labels[bad[0]]} at example {bad[0]})."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------------------------------------------------


def sample_per_class(
    dataset: Dataset, label_column: str, samples_per_class: int, seed: int, label_names: list[str] | None = None
) -> Dataset:
    """A seeded few-shot subset: `samples_per_class` examples of every class (all of a class that has fewer, named
    in one warning line by `label_names` when given).

    The result keeps the original order of the examples.
    """
    if samples_per_class < 1:
        raise DataError(f"--train_samples_per_class must be >= 1, got {samples_per_class}.")
    labels = np.asarray(dataset[label_column])
    rng = np.random.default_rng(seed)
    chosen, short = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size < samples_per_class:
            name = label_names[label] if label_names is not None and 0 <= label < len(label_names) else str(label)
            short.append(f"{name} ({members.size})")
        chosen.append(rng.choice(members, size=min(samples_per_class, members.size), replace=False))
    if short:
        logger.warning(
            f"{len(short)} class(es) have fewer than {samples_per_class} training examples; using all they have: "
            f"{', '.join(short[:20])}{' ...' if len(short) > 20 else ''}."
        )
    return dataset.select(np.sort(np.concatenate(chosen)).tolist())


def truncate(dataset: Dataset, max_samples: int | None, seed: int, flag: str = "max_samples") -> Dataset:
    """At most `max_samples` examples, drawn at random with `seed` (the whole dataset when `None`); `flag` names the
    option in the error a `max_samples` below 1 gets."""
    if max_samples is not None and max_samples < 1:
        raise DataError(f"--{flag} must be >= 1 (or left out for every example), got {max_samples}.")
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_samples))


def check_preset_classes(preset: DatasetPreset, label_column: str, found: int) -> None:
    """`found` classes in `label_column` where `preset` declares `preset.num_labels`: a [`DataError`] (the Hub
    dataset's schema drifted) when it is the preset's own label column, else (another column, chosen with
    `--label_column`) a warning."""
    message = (
        f"--dataset {preset.name}: column '{label_column}' of {preset.hub_id or 'the data'} has {found} classes, the "
        f"preset declares {preset.num_labels}"
    )
    if label_column != preset.label_column:
        logger.warning(message + f" (its column is '{preset.label_column}').")
        return
    raise DataError(
        message + ": the dataset's schema changed since the preset was written (see its Hub card); "
        "pass --label_column to train on another column."
    )


def check_eval_classes(train: Dataset, evaluation: Dataset, label_column: str, label_names: list[str]) -> None:
    """Raise a [`DataError`] if the evaluation split has classes the train split has none of: the new head would
    get classes it is never trained on."""
    unseen = sorted(set(evaluation[label_column]) - set(train[label_column]))
    if unseen:
        names = [label_names[i] if 0 <= i < len(label_names) else str(i) for i in unseen]
        raise DataError(
            f"The validation split has {len(unseen)} class(es) with no training example: {names[:10]}; every "
            "validation class must be a training class (add training images of them, or remove them)."
        )


def with_example_index(dataset: Dataset) -> Dataset:
    """`dataset` with an [`INDEX_COLUMN`] holding each example's position (kept through later selections)."""
    if INDEX_COLUMN in dataset.column_names:
        return dataset
    return dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))


# ---------------------------------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------------------------------


def labelled_splits(
    splits: DatasetDict, label_column: str, preset: DatasetPreset | None, num_labels: int | None, source: DataSource,
    train_val_split: float, seed: int, subset: bool,
) -> tuple[DatasetDict, list[str], int, Dataset | None]:  # fmt: skip
    """Checked, encoded labels of `splits` (of any modality): an evaluation split held out of `"train"` where there is
    none (written into `source`), class ids ([`encode_labels`]), the preset's class count, every label in the
    model's range (`num_labels`, default: the data's classes), every evaluation class trained on. Returns the splits
    without the dataset's own validation split, the class names, `num_labels`, and that split (or `None`; with a
    training `subset`, a [`DataError`])."""
    if "validation" not in splits:
        splits = split_off_validation(splits["train"], train_val_split, seed, label_column)
        source.eval_split_role = f"{train_val_split:.0%} held out of the training data (seed {seed})"
    splits, label_names = encode_labels(splits, label_column)
    if preset is not None and len(label_names) != preset.num_labels:
        check_preset_classes(preset, label_column, len(label_names))
    num_labels = num_labels or len(label_names)
    for name, split in splits.items():
        check_label_range(split, label_column, num_labels, name)
    check_eval_classes(splits["train"], splits["validation"], label_column, label_names)
    own = splits.pop(OWN_VALIDATION_KEY, None)
    if own is not None and subset:
        raise DataError(
            "The dataset's own validation split goes with its full training data: drop --train_samples_per_class / "
            "--max_train_samples, or carve the validation split from the subset (--validation_source carve)."
        )
    return splits, label_names, num_labels, own


def draw_subsets(
    splits: DatasetDict, label_column: str, label_names: list[str], source: DataSource, seed: int,
    train_samples_per_class: int | None, max_train_samples: int | None, max_eval_samples: int | None,
) -> tuple[Dataset, Dataset]:  # fmt: skip
    """The `"train"` and `"validation"` splits indexed ([`with_example_index`]), then the seeded few-shot subset
    and the size caps; `source` records the counts a model card states."""
    train, evaluation = (with_example_index(splits[k]) for k in ("train", "validation"))
    if train_samples_per_class is not None:
        train = sample_per_class(train, label_column, train_samples_per_class, seed, label_names)
    if max_eval_samples is not None and max_eval_samples < len(evaluation):  # the card says "N of its M images"
        source.eval_split_examples = len(evaluation)
    source.train_samples_per_class = train_samples_per_class
    train = truncate(train, max_train_samples, seed, "max_train_samples")
    evaluation = truncate(evaluation, max_eval_samples, seed, "max_eval_samples")
    return train, evaluation


@dataclass
class PreparedData:
    """Train and eval splits ready for [`set_transforms`], with what is known about them.

    Attributes:
        train (`Dataset`), eval (`Dataset`): the splits, images not yet decoded.
        label_names (`list[str]`): class names, indexed by label id.
        image_column (`str`), label_column (`str`): the columns used.
        description (`str`): where the data came from (for logs, results and model cards).
        transform_config (`TransformConfig`): the transforms [`set_transforms`] attached (None before).
        source (`DataSource`): the dataset's name, Hub id, revision and splits, without local paths (model cards).
        validation (`Dataset`, *optional*): a split held out of `train` (never of `eval`) for a hyperparameter
            search and calibration (see `smile_hf.data.validation`), given the evaluation transform; or the dataset's
            own validation split.
        validation_split (`ValidationSplit`, *optional*): what `validation` is.
        search_train (`Dataset`, *optional*): what a search's trials train on when it is not `train`: `train`
            without the dataset's own validation split, which the final run (`train`) trains on too.
        unlabeled (`Dataset`, *optional*): unlabelled images of the domain (`smile_hf.data.unlabeled`), given the
            training transform without labels by [`set_transforms`]; `unlabeled_source` says where they come from.
    """

    train: Dataset
    eval: Dataset
    label_names: list[str]
    image_column: str
    label_column: str
    description: str
    transform_config: TransformConfig | None = None
    source: DataSource | None = None
    validation: Dataset | None = None
    validation_split: ValidationSplit | None = None
    search_train: Dataset | None = None
    unlabeled: Dataset | None = None
    unlabeled_source: str | None = None
    modality: ClassVar[str] = "image"
    """What the examples are (`"image"`, `"text"` for [`TextData`]): the task of the model card."""
    items: ClassVar[str] = "images"
    """The examples in words, for what a run prints."""

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))


def prepare_datasets(
    dataset: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    num_labels: int | None = None,
    train_val_split: float = 0.15,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    train_samples_per_class: int | None = None,
    corrupt_images: str = "error",
    seed: int = 0,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    disable_tqdm: bool = False,
    own_validation: bool = False,
    train_on_validation: bool = True,
) -> PreparedData:
    """Load a preset (`dataset`) or image folders (`train_dir`, `validation_dir`), check columns and labels, and
    draw the requested subsets. Every problem is a one-line [`DataError`].

    Args:
        dataset: name of a preset in [`DATASET_PRESETS`].
        train_dir, validation_dir: image folders laid out as `<dir>/<class>/<image>` (instead of `dataset`).
        image_column, label_column: column names (default: the preset's, or `image` / `label`).
        num_labels: classes of the model's new head (default: the number of classes of the data); every label must
            be below it.
        train_val_split: fraction of train carved off for evaluation when there is no eval split.
        max_train_samples, max_eval_samples: random subsets (seeded) of at most that many examples.
        train_samples_per_class: a seeded few-shot subset of the train split, applied before `max_train_samples`.
        corrupt_images: `"error"` (an undecodable image of either split stops the run now, naming the files) or
            `"skip"` (drop them all first, logged).
        seed: seed of every random choice here.
        cache_dir, token: passed to `datasets.load_dataset`.
        disable_tqdm: hide the progress bar of the undecodable-image scan.
        own_validation: make the preset's own validation split `validation` (its `validation_split`), with the
            full training data only (no `train_samples_per_class` / `max_train_samples`).
        train_on_validation: with `own_validation`, `train` keeps the validation split when the preset trains on it
            (and `search_train` is `train` without it); `False`: `train` is without it (it calibrates).
    """
    if corrupt_images not in CORRUPT_IMAGE_POLICIES:
        raise DataError(f"--corrupt_images must be one of {', '.join(CORRUPT_IMAGE_POLICIES)}, got '{corrupt_images}'.")
    max_image_pixels()  # a malformed SMILE_HF_MAX_IMAGE_PIXELS is one line now, not every image "undecodable"
    if (dataset is None) == (train_dir is None):
        raise DataError("Pass exactly one of --dataset NAME (a preset) or --train_dir DIR (your own image folders).")
    if dataset is not None:
        preset = get_preset(dataset)
        splits = load_preset(preset, cache_dir=cache_dir, token=token, own_validation=own_validation)
        image_column, label_column = image_column or preset.image_column, label_column or preset.label_column
        description = preset.hub_id or f"{preset.name} (built in)"
        source = preset.source()
        source.revision = resolved_revision(splits["train"], preset.revision)
    else:
        preset = None
        splits = load_image_folders(train_dir, validation_dir, cache_dir=cache_dir)
        image_column, label_column = image_column or "image", label_column or "label"
        description = train_dir
        source = local_data_source(train_dir, validation_dir)
    for name, split in splits.items():
        check_columns(split, image_column, label_column, name)
    splits, label_names, num_labels, own = labelled_splits(
        splits, label_column, preset, num_labels, source, train_val_split, seed,
        subset=train_samples_per_class is not None or max_train_samples is not None,
    )  # fmt: skip
    search_size = None  # the training examples without the own validation split, when the final run trains on both
    if own is not None and train_on_validation and preset.validation_split in preset.train_parts():
        search_size, splits["train"] = len(splits["train"]), concatenate_datasets([splits["train"], own])

    train, evaluation = draw_subsets(
        splits, label_column, label_names, source, seed, train_samples_per_class, max_train_samples, max_eval_samples
    )
    train, evaluation = (
        handle_corrupt_images(
            without_image_decoding(split, image_column), image_column, corrupt_images, name, not disable_tqdm
        )
        for split, name in ((train, "train"), (evaluation, "validation"))
    )
    source.eval_examples = len(evaluation)
    if len(train) == 0 or len(evaluation) == 0:
        raise DataError(f"Nothing left to train or evaluate on ({len(train)} train, {len(evaluation)} eval examples).")
    data = PreparedData(
        train,
        evaluation,
        label_names[:num_labels] + [str(i) for i in range(len(label_names), num_labels)],
        image_column,
        label_column,
        description,
        source=source,
    )
    if own is not None:
        use_own_validation(data, own, preset.validation_split, search_size, corrupt_images, not disable_tqdm)
    return data


def use_own_validation(
    data: PreparedData, own: Dataset, split_name: str, search_size: int | None, corrupt_images: str, progress: bool
) -> None:
    """Set `data.validation` to the dataset's own validation split `own` (`split_name`) and `data.validation_split`.
    `search_size`: `data.train` holds it after its first `search_size` examples (indexed by [`INDEX_COLUMN`]), the
    trials' training data (`data.search_train`); `None`: `data.train` does not hold it."""
    if search_size is None:
        own = without_image_decoding(with_example_index(own), data.image_column)
        data.validation = handle_corrupt_images(own, data.image_column, corrupt_images, split_name, progress)
    else:
        index = np.asarray(data.train.with_format(None)[INDEX_COLUMN])
        data.validation = data.train.select(np.flatnonzero(index >= search_size).tolist())
        data.search_train = data.train.select(np.flatnonzero(index < search_size).tolist())
    if len(data.validation) == 0:
        raise DataError(f"The dataset's own `{split_name}` split has no image left: --validation_source carve instead.")
    searched, final = (data.train, None) if data.search_train is None else (data.search_train, len(data.train))
    data.validation_split = own_validation_split(data.validation, searched, data.label_column, split_name, final)


def set_transforms(data: PreparedData, config: TransformConfig, seed: int | None = 0) -> None:
    """Attach the train and eval pipelines to `data`'s splits (`set_transform`: applied on access, per batch). The
    training augmentation of each example is drawn from (`seed`, epoch, example index) (see [`BatchTransform`]);
    `seed=None` draws it from torch's global generator instead."""
    data.transform_config = config
    splits = [(data.train, True, "train"), (data.eval, False, "validation")]
    if data.validation is not None:  # held out of train, transformed as the evaluation split is
        splits.append((data.validation, False, "held-out validation"))
    if data.search_train is not None:  # the trials' training data: train without the dataset's own validation split
        splits.append((data.search_train, True, "train"))
    if data.unlabeled is not None:  # the training transform, no label
        image_column = data.image_column if data.image_column in data.unlabeled.column_names else "image"
        data.unlabeled.set_transform(
            BatchTransform(ImageTransform(config, True), image_column, None, "unlabelled", seed)
        )
    for split, train, name in splits:
        transform = BatchTransform(ImageTransform(config, train), data.image_column, data.label_column, name, seed)
        split.set_transform(transform)
