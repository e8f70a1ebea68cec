# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Classify image files with a trained model (what `smile-hf train --do_predict` does): the evaluation
transform on each file, the model's softmax in batches, the top-k labels and scores of each image, and
`predictions.csv`."""

from __future__ import annotations

import copy
import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from .channels import model_num_channels
from .data import DECODE_ERRORS, DataError, decode_error_text, decode_image

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"


@dataclass
class Prediction:
    """The top-k classes of one image file.

    Attributes:
        file (`str`): the file, as given.
        labels (`list[str]`): the class names, most probable first.
        scores (`list[float]`): their softmax probabilities.
    """

    file: str
    labels: list[str]
    scores: list[float]


def _read(file: str, corrupt_images: str) -> Image.Image | None:
    """The decoded image of `file`; an undecodable one is a [`DataError`] naming it, or `None` (logged) with
    `corrupt_images="skip"`."""
    try:
        return decode_image(file)
    except DECODE_ERRORS as error:
        if corrupt_images != "skip":
            raise DataError(
                f"Cannot decode the image {file} ({decode_error_text(error)}); pass --corrupt_images skip to leave it out."
            ) from error
        logger.warning(f"Skipping the undecodable image {file} ({decode_error_text(error)}).")
        return None


def classify_files(
    model: nn.Module,
    files: Sequence[str],
    transform: Callable[[Image.Image], torch.Tensor],
    top_k: int = 5,
    batch_size: int = 32,
    corrupt_images: str = "error",
) -> list[Prediction]:
    """Classify each image file: `softmax(model(transform(image)).logits)` (in float32) and its `top_k` classes
    (at most the model's number of classes), named by `model.config.id2label`.

    Args:
        model: an image classifier (`pixel_values` in, `.logits` out), used in eval mode on its own device.
        files: the image files, classified in this order.
        transform: the per-image evaluation transform (a PIL image to a normalised 3 x H x W tensor).
        top_k: classes kept per image.
        batch_size: images per forward pass.
        corrupt_images: `"error"` (an undecodable file is a [`DataError`] naming it) or `"skip"` (left out, logged).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            return classify_files_with(
                lambda pixels: model(pixel_values=pixels.to(device)).logits, model.config.id2label,
                model_num_channels(model), files, transform, top_k, batch_size, corrupt_images,
            )  # fmt: skip
    finally:
        model.train(was_training)


def classify_files_with(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    id2label: dict[int, str],
    num_channels: int,
    files: Sequence[str],
    transform: Callable[[Image.Image], torch.Tensor],
    top_k: int = 5,
    batch_size: int = 32,
    corrupt_images: str = "error",
) -> list[Prediction]:
    """[`classify_files`] with any classifier: `logits_of` maps a `pixel_values` batch (CPU, float32) to its logits
    (an exported graph on ONNX Runtime, say); `id2label` names the classes and `num_channels` is the channel count
    the classifier takes (a smile_hf transform converts the images to it)."""
    config = getattr(transform, "config", None)
    if hasattr(config, "with_channels") and config.num_channels != num_channels:
        transform = copy.copy(transform)  # a smile_hf ImageTransform: images converted to the model's channels
        transform.config = config.with_channels(num_channels)
    predictions = []
    for start in range(0, len(files), batch_size):
        batch = [(f, _read(f, corrupt_images)) for f in files[start : start + batch_size]]
        batch = [(f, image) for f, image in batch if image is not None]
        if not batch:
            continue
        probabilities = logits_of(torch.stack([transform(image) for _, image in batch])).float().softmax(dim=-1)
        scores, ids = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        for (file, _), row_scores, row_ids in zip(batch, scores.tolist(), ids.tolist()):
            predictions.append(Prediction(file, [id2label[i] for i in row_ids], row_scores))
    return predictions


def write_predictions(predictions: Sequence[Prediction], path: str, root: str | None = None) -> str:
    """Write `predictions` as CSV to `path`: one row per image, `file` (relative to `root` when given), then
    `label_1, score_1, ..., label_k, score_k` (scores with full float precision). Return `path`."""
    k = max((len(p.labels) for p in predictions), default=0)
    header = ["file"] + [name for i in range(1, k + 1) for name in (f"label_{i}", f"score_{i}")]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for p in predictions:
            cells = [cell for label, score in zip(p.labels, p.scores) for cell in (label, repr(float(score)))]
            writer.writerow([os.path.relpath(p.file, root) if root else p.file, *cells])
    return path
