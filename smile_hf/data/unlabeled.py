# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Unlabelled images for [`SmileTrainer`]'s `unlabeled_dataset`: a folder of images without class sub-folders
(`--unlabeled_dir`), or the training images a subset left out (`--unlabeled_from_train`), their label column dropped.
Both are scanned for undecodable images and transformed as the training images are (`set_transforms`),
and neither ever holds an evaluation image."""

from __future__ import annotations

import os

import numpy as np
from datasets import Dataset, Image

from .errors import DataError
from .presets import image_files
from .scan import handle_corrupt_images, without_image_decoding
from .transforms import INDEX_COLUMN

UNLABELED_IMAGE_COLUMN = "image"
"""The image column of an `--unlabeled_dir` dataset."""


def load_unlabeled_folder(directory: str, corrupt_images: str = "error", progress: bool = False) -> Dataset:
    """The images under `directory` (searched recursively, no class layout read) as a dataset with one column,
    `image`, and an [`INDEX_COLUMN`]; undecodable images are handled by the `corrupt_images` policy."""
    if not os.path.isdir(directory):
        raise DataError(f"--unlabeled_dir '{directory}' is not a folder: pass a folder of images.")
    files = image_files(directory)
    if not files:
        raise DataError(f"--unlabeled_dir '{directory}' holds no image file: pass a folder of images.")
    dataset = Dataset.from_dict({UNLABELED_IMAGE_COLUMN: files, INDEX_COLUMN: list(range(len(files)))})
    dataset = without_image_decoding(dataset.cast_column(UNLABELED_IMAGE_COLUMN, Image()), UNLABELED_IMAGE_COLUMN)
    return handle_corrupt_images(dataset, UNLABELED_IMAGE_COLUMN, corrupt_images, "unlabelled", progress)


def unlabeled_from_train(full_train: Dataset, label_column: str, *used: Dataset | None) -> Dataset:
    """The examples of `full_train` that the `used` splits (subsets of it, by [`INDEX_COLUMN`]: the training subset,
    a validation split held out of it) left out, with the label column removed before anything reads them."""
    used = tuple(split for split in used if split is not None)
    for name, split in (("the training split", full_train), *(("a subset", split) for split in used)):
        if INDEX_COLUMN not in split.column_names:
            raise DataError(f"{name} has no '{INDEX_COLUMN}' column: build it with smile_hf.data.with_example_index.")
    unlabeled = full_train.remove_columns([label_column])  # the labels are gone before any row is read
    taken = {i for split in used for i in split.with_format(None)[INDEX_COLUMN]}
    index = np.asarray(unlabeled.with_format(None)[INDEX_COLUMN])
    rest = [int(i) for i in np.flatnonzero(~np.isin(index, list(taken)))]
    if not rest:
        raise DataError("--unlabeled_from_train: the training subset holds every training image, none is left over.")
    return unlabeled.select(rest)
