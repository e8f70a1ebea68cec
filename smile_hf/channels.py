# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The number of image channels a model takes, and fitting images, normalisation statistics and datasets to it.

Every probe, dummy input and transform of the package reads the channel count from the model: `config.num_channels`
(or its `vision_config`'s), else the input channels of its first convolution (timm models). Grayscale images given
to a 3-channel model are replicated to RGB, and colour images given to a 1-channel model are converted to grayscale
(PIL's "L"), each noted once in the log; any other mismatch is one clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""PIL modes of single-channel images (with or without transparency)."""
_NOTED: set[str] = set()


def model_num_channels(model: nn.Module) -> int:
    """The number of input channels of `model`: `config.num_channels` (or `config.vision_config.num_channels`),
    else the `in_channels` of its first `nn.Conv2d` (timm models, whose config does not say), else 3."""
    config = getattr(model, "config", None)
    for candidate in (config, getattr(config, "vision_config", None)):
        value = getattr(candidate, "num_channels", None)
        if isinstance(value, int) and value > 0:
            return value
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def note_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` is seen in this process."""
    if key not in _NOTED:
        _NOTED.add(key)
        logger.warning(message)


def channel_stats(values: Sequence[float] | float, num_channels: int, name: str = "image_mean") -> tuple[float, ...]:
    """Per-channel normalisation statistics for `num_channels` channels: as given when they have that many, one value
    repeated, or for a 1-channel model the mean of an RGB processor's three (its grayscale images are the luma of
    such images). Raises `ValueError` otherwise."""
    array = np.atleast_1d(np.asarray(values, dtype=float))
    if array.size == num_channels:
        return tuple(float(v) for v in array)
    if array.size == 1:
        return (float(array[0]),) * num_channels
    if num_channels == 1:
        return (float(array.mean()),)
    raise ValueError(
        f"The image processor's `{name}` has {array.size} values but the model takes {num_channels} channels "
        f"(config.num_channels): give a processor with {num_channels} values."
    )


def mode_for_channels(mode: str, num_channels: int) -> str:
    """The PIL mode an image of `mode` is converted to for a model of `num_channels` channels ("RGB", "L", or
    `mode` itself when it already has that many bands), noting a grayscale / colour conversion once. Raises
    `ValueError` when no conversion makes sense (e.g. RGB images for a 4-channel model)."""
    gray = mode in GRAYSCALE_MODES
    if num_channels == 3:
        if gray:
            note_once("gray->rgb", "Grayscale images are converted to RGB (the gray level in each channel) for a model "
                      "with 3 input channels.")  # fmt: skip
        return "RGB"
    if num_channels == 1:
        if not gray:
            note_once("color->l", f"'{mode}' images are converted to grayscale ('L', PIL's luma) for a model with 1 "
                      "input channel.")  # fmt: skip
        return "L"
    bands = {"RGBA": 4, "CMYK": 4, "RGBX": 4, "RGBa": 4}.get(mode)
    if bands == num_channels:
        return mode
    raise ValueError(
        f"Images of mode '{mode}' cannot be converted for a model with {num_channels} input channels "
        f"(config.num_channels): give {num_channels}-channel images (e.g. RGBA for 4)."
    )


def _example_channels(dataset) -> int | None:
    """The channel count of the first example's `pixel_values` when a dataset holds tensors (None if unknown)."""
    try:
        pixel_values = dataset[0]["pixel_values"]
    except (TypeError, KeyError, IndexError, NotImplementedError):
        return None
    shape = getattr(pixel_values, "shape", None) or np.shape(pixel_values)
    return int(shape[0]) if len(shape) == 3 else None


def fit_datasets_to_model(model: nn.Module, datasets: dict[str, Any]) -> None:
    """Make each dataset feed `model` as many channels as it takes: a smile_hf transform attached with
    `set_transform` (whose `transform.config` has `num_channels`) is switched to the model's count (images are then
    converted as [`mode_for_channels`] says); a dataset of tensors with another count is a one-line `ValueError`."""
    num_channels = model_num_channels(model)
    for split, dataset in datasets.items():
        if dataset is None:
            continue
        transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
        image_transform = getattr(transform, "transform", None)
        config = getattr(image_transform, "config", None)
        if hasattr(config, "with_channels"):
            if config.num_channels != num_channels:
                image_transform.config = config.with_channels(num_channels)
            continue
        found = _example_channels(dataset)
        if found is not None and found != num_channels:
            raise ValueError(
                f"The {split} set's pixel_values have {found} channels but the model takes {num_channels} "
                "(config.num_channels): convert the tensors, or give images with smile_hf.data's transforms, which "
                "convert grayscale and colour images to the model's channels."
            )
