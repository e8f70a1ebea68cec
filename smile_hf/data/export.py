# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The image processor saved with an exported model: the evaluation transform of [`TransformConfig`] as a
`transformers` image processor, so that `pipeline("image-classification")` sees what evaluation fed the model."""

from __future__ import annotations

from typing import Any

from transformers.image_utils import PILImageResampling

from .._compat import portable_image_processor_class
from .transforms import BatchTransform, ImageTransform, TransformConfig


def eval_image_processor(config: TransformConfig):
    """A `transformers` image processor that reproduces the evaluation pipeline of `config`: bilinear resize of the
    RGB uint8 image to `resize_size` (with `keep_aspect`: of its shorter side to `max(resize_size)`, the processor's
    `shortest_edge`), center crop to `crop_size`, scaling to [0, 1], normalisation. Saved with the exported model, so
    that `pipeline("image-classification")` feeds the model what evaluation fed it, bit for bit: it is transformers'
    PIL processor (`PilBackend`), which `AutoImageProcessor` loads as such whether or not torchvision is installed (a
    model's own processor class, e.g. `DeiTImageProcessor`, loads as its torchvision variant where torchvision is
    installed, whose uint8 resize differs from PIL's by one level on some pixels)."""
    processor_class = portable_image_processor_class()
    height, width = config.resize_size
    crop_height, crop_width = config.crop_size
    size = {"shortest_edge": max(height, width)} if config.keep_aspect else {"height": height, "width": width}
    return processor_class(
        do_resize=True,
        size=size,
        resample=PILImageResampling.BILINEAR,
        do_center_crop=True,
        crop_size={"height": crop_height, "width": crop_width},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.mean),
        image_std=list(config.std),
    )


def evaluation_processor(dataset: Any):
    """The image processor of `dataset`'s evaluation transform ([`eval_image_processor`] of its config), when the
    transform attached with `set_transform` is an evaluation [`BatchTransform`] (what [`set_transforms`] attaches
    to the eval split); else `None`. `SmileTrainer` saves it with the model when no `processing_class` is given,
    so that `pipeline()` on the export sees what evaluation fed the model."""
    transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
    image_transform = getattr(transform, "transform", None)
    if not isinstance(transform, BatchTransform) or not isinstance(image_transform, ImageTransform):
        return None
    return None if image_transform.train else eval_image_processor(image_transform.config)
