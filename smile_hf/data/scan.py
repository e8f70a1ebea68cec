# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Undecodable images, and images the conversion to RGB loses something of: every image of a split decoded before
training ([`scan_images`]), and the `--corrupt_images` policy applied to what the scan found
([`handle_corrupt_images`])."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import Dataset
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

from .errors import DataError
from .transforms import DECODE_ERRORS, INDEX_COLUMN, decode_error_text, decode_image, image_source, lossy_conversion

logger = logging.getLogger(__name__)

CORRUPT_IMAGE_POLICIES = ("error", "skip")


@dataclass
class ImageScan:
    """What decoding every image of a split found.

    Attributes:
        corrupt (`list[int]`): positions of the examples whose image cannot be decoded (truncated or corrupt files,
            unknown formats, images over PIL's decompression-bomb limit: [`DECODE_ERRORS`]).
        errors (`list[str]`): why, one line for each of `corrupt` ([`decode_error_text`]).
        lossy (`dict[str, list[int]]`): positions of the images that the conversion to RGB ([`to_rgb`], what
            `pipeline()` does) loses something of, by what it loses ([`lossy_conversion`]).
    """

    corrupt: list[int]
    lossy: dict[str, list[int]]
    errors: list[str] = field(default_factory=list)


def scan_images(
    dataset: Dataset, image_column: str, chunk_size: int = 256, progress: bool = False, split: str = ""
) -> ImageScan:
    """Decode every image of `dataset` (whose image column must not be auto-decoded) and report the undecodable
    ones and those the conversion to RGB loses something of ([`ImageScan`]).

    Reads `chunk_size` examples at a time, so that large datasets are never held in memory at once; with
    `progress`, a tqdm bar over the examples of `split`.
    """
    scan = ImageScan([], {})
    bar = tqdm(total=len(dataset), desc=f"Checking the {split} images".replace("  ", " "), disable=not progress)
    for start in range(0, len(dataset), chunk_size):
        bar.update(min(chunk_size, len(dataset) - start))
        for offset, value in enumerate(dataset[start : start + chunk_size][image_column]):
            try:
                loss = lossy_conversion(decode_image(value))
            except DECODE_ERRORS as error:
                scan.corrupt.append(start + offset)
                scan.errors.append(decode_error_text(error))
                continue
            if loss is not None:
                scan.lossy.setdefault(loss, []).append(start + offset)
    bar.close()
    return scan


def find_corrupt_images(
    dataset: Dataset, image_column: str, chunk_size: int = 256, progress: bool = False, split: str = ""
) -> list[int]:
    """Positions of the examples whose image cannot be decoded ([`scan_images`]`.corrupt`)."""
    return scan_images(dataset, image_column, chunk_size, progress, split).corrupt


def without_image_decoding(dataset: Dataset, image_column: str) -> Dataset:
    """`dataset` with the image column left undecoded (`{"bytes", "path"}`), so that decoding errors can be caught
    per example."""
    if isinstance(dataset.features[image_column], ImageFeature):
        return dataset.cast_column(image_column, ImageFeature(decode=False))
    return dataset


def name_examples(dataset: Dataset, positions: list[int], image_column: str, limit: int = 5) -> list[str]:
    """The images at `positions` of `dataset` named for a message: file paths when known, else example indices."""
    indices = dataset[INDEX_COLUMN] if INDEX_COLUMN in dataset.column_names else range(len(dataset))
    return [image_source(dataset[int(p)][image_column], int(indices[p])) for p in positions[:limit]]


def warn_lossy_images(dataset: Dataset, lossy: dict[str, list[int]], image_column: str, split: str) -> None:
    """One warning line per kind of loss in [`ImageScan`]`.lossy`: how many images of `split`, which (the first
    five), what the conversion does to them and what to do about it."""
    what = {
        "transparency": "their alpha dropped (each pixel keeps the colour stored under it)",
        "values outside 0..255": "their values clipped to 0..255, not rescaled",
    }
    for loss, positions in lossy.items():
        logger.warning(
            f"{len(positions)} image(s) of the {split} split have {loss} ({name_examples(dataset, positions, image_column)}): "
            f"like pipeline() (PIL's convert('RGB')), the model sees them with {what[loss]}; convert them to 8-bit "
            "RGB first if that loses what tells their classes apart."
        )


def handle_corrupt_images(
    dataset: Dataset, image_column: str, policy: str, split: str, progress: bool = False
) -> Dataset:
    """Scan `dataset` ([`scan_images`]) before training. With `policy="error"`, an undecodable image is a
    [`DataError`] naming the files; with `"skip"`, the examples whose image cannot be decoded are dropped and logged
    (file paths when known). Both splits get the same policy, so that an undecodable image stops the run before
    training rather than in the middle of it. Images whose conversion to RGB loses something are logged
    ([`warn_lossy_images`]). `progress` shows a tqdm bar of the scan."""
    if policy not in CORRUPT_IMAGE_POLICIES:
        raise DataError(f"--corrupt_images must be one of {', '.join(CORRUPT_IMAGE_POLICIES)}, got '{policy}'.")
    scan = scan_images(dataset, image_column, progress=progress, split=split)
    warn_lossy_images(dataset, scan.lossy, image_column, split)
    bad = scan.corrupt
    if bad and policy == "error":
        raise DataError(
            f"{len(bad)} image(s) of the {split} split cannot be decoded: {name_examples(dataset, bad, image_column)} "
            f"(the first: {scan.errors[0]}); fix or remove them, or pass --corrupt_images skip to drop them."
        )
    if bad:
        named = name_examples(dataset, bad, image_column, limit=20)
        logger.warning(f"Skipping {len(bad)} undecodable image(s) of the {split} split: {named} (the first: {scan.errors[0]}).")
        keep = sorted(set(range(len(dataset))) - set(bad))
        dataset = dataset.select(keep)
    return dataset
