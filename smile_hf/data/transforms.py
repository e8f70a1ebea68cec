# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The train / eval transforms of the SMILE reference, written with torch only (no torchvision): image decoding,
conversion to RGB, tensor resize / crop / normalise, [`TransformConfig`], the per-image [`ImageTransform`], the
per-batch [`BatchTransform`] that `Dataset.set_transform` applies, and the Trainer's [`collate`].

The transforms follow the reference (PaddleTransfer's SMILE `finetune.py`):

- train: resize to a square of `resize_size`, random crop of `crop_size`, random horizontal flip, normalise;
- eval: resize to a square of `resize_size`, center crop of `crop_size`, normalise;

or, with `keep_aspect` (the reference's `keep_aspect`, its CUB-200-2011 setting), resize the shorter side to
`resize_size` keeping the aspect ratio (torchvision's `Resize(int)`), then crop;

with `crop_size`, mean and std read from the checkpoint's image processor and `resize_size = crop_size / crop_pct`
(`crop_pct = 224 / 256` in the reference).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, UnidentifiedImageError
from transformers import TrainerCallback
from transformers.image_utils import load_image

from ..channels import channel_stats, mode_for_channels
from .errors import DataError, one_line

INDEX_COLUMN = "__example_index__"
"""Column added to every split so that a transform can name the example whose image cannot be decoded."""

REFERENCE_CROP_PCT = 224 / 256
"""Crop size over resize size in the SMILE reference (resize 256 x 256, crop 224)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------


def image_source(value: Any, index: Any = None) -> str:
    """How to name an image in a message: its file path when the dataset has one, else `example <index>`."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    return f"{path}" if path else f"example {index}"


MAX_IMAGE_PIXELS_ENV = "SMILE_HF_MAX_IMAGE_PIXELS"
"""Environment variable that sets `PIL.Image.MAX_IMAGE_PIXELS` for every decode ([`decode_image`]): PIL refuses an
image of more than twice that many pixels as a possible decompression bomb (`DecompressionBombError`). Default
(unset): PIL's, 89,478,485, so images above 178,956,970 pixels (about 13,400 x 13,400) are refused; `0` lifts the
limit."""

DECODE_ERRORS = (OSError, UnidentifiedImageError, TypeError, ValueError, SyntaxError, Image.DecompressionBombError)
"""What decoding an unreadable image raises: truncated or corrupt files (`OSError`, `SyntaxError`), unknown formats,
values that are no image, and images over PIL's decompression-bomb limit ([`MAX_IMAGE_PIXELS_ENV`])."""


def max_image_pixels() -> int | None:
    """`PIL.Image.MAX_IMAGE_PIXELS` as [`MAX_IMAGE_PIXELS_ENV`] sets it (`None`: no limit), or PIL's own value when
    it is unset. A value that is not a whole number of pixels is a [`DataError`]."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if text is None:
        return Image.MAX_IMAGE_PIXELS
    try:
        pixels = int(text.strip().replace("_", ""))
    except ValueError:
        pixels = -1
    if pixels < 0:
        raise DataError(f"{MAX_IMAGE_PIXELS_ENV} must be a whole number of pixels (0: no limit), got '{text}'.")
    return pixels or None


def decode_error_text(error: BaseException) -> str:
    """`error` of decoding an image as one line ([`one_line`]); a decompression-bomb refusal says how to lift it."""
    text = one_line(error)
    if isinstance(error, Image.DecompressionBombError):
        text += (
            f"; if it is a real image this large, raise the limit with the environment variable "
            f"{MAX_IMAGE_PIXELS_ENV}=<pixels> (PIL refuses above twice it; 0: no limit)"
        )
    return text


def decode_image(value: Any, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """A PIL image from what a dataset column may hold: a PIL image, `{"bytes", "path"}`, a path, or an array.

    With `draft_size` = (width, height), a JPEG file is decoded at the smallest of the scales 1/8, 1/4, 1/2, 1 that
    still gives at least that size (PIL's `draft`: the decoder skips the DCT detail, several times faster on a large
    image); other formats, and images already decoded, are read at full size."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
    elif isinstance(value, (str, os.PathLike)):
        source = value
    elif isinstance(value, (np.ndarray, torch.Tensor)):
        return Image.fromarray(np.asarray(value))
    else:
        raise TypeError(f"Cannot read an image from a {type(value).__name__}.")
    if MAX_IMAGE_PIXELS_ENV in os.environ:
        Image.MAX_IMAGE_PIXELS = max_image_pixels()
    image = Image.open(source)  # DecompressionBombError above twice Image.MAX_IMAGE_PIXELS
    if draft_size is not None and image.format == "JPEG":
        image.draft(None, draft_size)  # keeps the mode; a no-op unless the image is at least twice the size
    image.load()  # decode now, so that a truncated or corrupt file fails here
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB image `pipeline("image-classification")` feeds its image processor: `image` turned upright by its EXIF
    orientation, then PIL's `convert("RGB")` (this is `transformers.image_utils.load_image`, which the pipeline
    calls on every input, file or PIL image, before the processor sees it).

    Training, evaluation and `--do_predict` all decode images here, so that the exported model sees in `pipeline()`
    exactly the pixels it was trained and evaluated on, in every mode. What PIL's conversion does, and the package
    therefore does too:

    - grayscale ('L') is replicated to three channels, 1-bit becomes 0 / 255, palette images are expanded, CMYK and
      YCbCr are converted;
    - transparency (RGBA, LA, PA, a palette with a transparent colour) is dropped: a pixel keeps the colour stored
      under it, whatever its alpha (a black glyph on fully transparent black is black on black);
    - 16-bit and 32-bit integer grayscale ('I;16', 'I') are clipped to 0..255, and float grayscale ('F') is
      truncated to an integer and clipped to 0..255: no rescaling.

    An image processor cannot change this (it receives the image already converted), so images whose meaning lives
    in their alpha channel or above 8 bits are best converted to 8-bit RGB before training; [`lossy_conversion`]
    says which ones are (`prepare_datasets` logs them).
    """
    if image.mode == "RGB" and image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image  # what load_image returns, without its two copies of the pixels
    return load_image(image)


def lossy_conversion(image: Image.Image) -> str | None:
    """What [`to_rgb`] loses of `image`, or `None`: `"transparency"` (some pixel has alpha < 255, or a palette
    image's transparent colour is in use) or `"values outside 0..255"` (integer grayscale with a value outside
    0..255, or float grayscale with a value that is not an integer of 0..255: the conversion clips and truncates)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image)
        exact = values.size == 0 or (values.min() >= 0 and values.max() <= 255 and (values == np.round(values)).all())
        return None if exact else "values outside 0..255"
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return "transparency" if image.getchannel(image.mode[-1]).getextrema()[0] < 255 else None
    return None


def uint8_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a uint8 tensor C x H x W (C = 3 for RGB, 1 for L...; a view of one copy of the pixels,
    channels last in memory)."""
    array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array[:, :, None] if array.ndim == 2 else array).permute(2, 0, 1)


def to_channels(image: Image.Image, num_channels: int = 3) -> Image.Image:
    """`image` in the mode a model with `num_channels` input channels takes ([`smile_hf.channels.mode_for_channels`]):
    RGB ([`to_rgb`]), L (the grayscale of [`to_rgb`]'s image, so decoded as `pipeline()` decodes it: transparency
    dropped, high bit depths clipped), or a 4-band mode kept."""
    mode = mode_for_channels(image.mode, num_channels)
    if mode == "RGB":
        return to_rgb(image)
    if mode == "L":
        return image if image.mode == "L" else to_rgb(image).convert("L")
    return image


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float tensor 3 x H x W in [0, 1]."""
    return uint8_tensor(to_rgb(image)).float().div_(255.0)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (anti-aliased) resize of C x H x W or B x C x H x W images to `size` = (height, width)."""
    batched = images.dim() == 4
    out = F.interpolate(
        images if batched else images[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return out if batched else out[0]


def crop(images: torch.Tensor, top: int, left: int, size: tuple[int, int]) -> torch.Tensor:
    """The `size` = (height, width) window of `images` (... x H x W) starting at (`top`, `left`)."""
    return images[..., top : top + size[0], left : left + size[1]]


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central `size` window (rounding the offsets as `torchvision.transforms.CenterCrop` does)."""
    height, width = images.shape[-2:]
    if size[0] > height or size[1] > width:
        raise ValueError(f"Crop {size} is larger than the image {(height, width)}.")
    return crop(images, round((height - size[0]) / 2.0), round((width - size[1]) / 2.0), size)


def random_crop(images: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random `size` window of `images` (... x H x W)."""
    height, width = images.shape[-2:]
    top = int(torch.randint(0, height - size[0] + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size[1] + 1, (1,), generator=generator))
    return crop(images, top, left, size)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(images - mean) / std per channel, for C x H x W or B x C x H x W."""
    shape = (-1, 1, 1)
    return (images - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def _hw(size: Any) -> tuple[int, int]:
    """(height, width) from an image processor's `size` / `crop_size` (dict or int)."""
    if isinstance(size, int):
        return size, size
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    for key in ("shortest_edge", "longest_edge"):
        if key in size:
            return int(size[key]), int(size[key])
    raise ValueError(f"Cannot read an image size from {size}.")


@dataclass(frozen=True)
class TransformConfig:
    """Sizes and normalisation of the train and eval transforms.

    Args:
        crop_size (`tuple[int, int]`): (height, width) the model sees.
        resize_size (`tuple[int, int]`): (height, width) images are resized to before cropping.
        mean (`tuple[float, ...]`): per-channel mean subtracted after scaling to [0, 1].
        std (`tuple[float, ...]`): per-channel standard deviation.
        random_horizontal_flip (`bool`): flip training images left-right with probability 1/2.
        num_channels (`int`): channels of the model's input; images are converted to them ([`to_channels`]).
        keep_aspect (`bool`): resize the shorter side to `resize_size` (the larger of its two sides) and the other
            in proportion, instead of squashing to `resize_size` ([`TransformConfig.resized_size`]).
    """

    crop_size: tuple[int, int] = (224, 224)
    resize_size: tuple[int, int] = (256, 256)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    random_horizontal_flip: bool = True
    num_channels: int = 3
    keep_aspect: bool = False

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of `height` x `width` is resized to: `resize_size`, or with `keep_aspect`
        the shorter side at `max(resize_size)` and the longer one at `int(that * long / short)` (torchvision's
        `Resize(int)` and `transformers`' `shortest_edge`, so that the exported processor resizes alike)."""
        if not self.keep_aspect:
            return self.resize_size
        size = max(self.resize_size)
        if height <= width:
            return size, int(size * width / height)
        return int(size * height / width), size

    def with_channels(self, num_channels: int) -> TransformConfig:
        """The config for a model with `num_channels` input channels (statistics by [`channel_stats`])."""
        mean, std = channel_stats(self.mean, num_channels), channel_stats(self.std, num_channels, "image_std")
        return replace(self, mean=mean, std=std, num_channels=num_channels)

    @classmethod
    def from_image_processor(
        cls, processor: Any | None, crop_pct: float | None = None, random_horizontal_flip: bool = True,
        keep_aspect: bool = False,
    ) -> TransformConfig:  # fmt: skip
        """Read the crop size and normalisation of a checkpoint's image processor.

        The crop is the processor's `crop_size` (when it center-crops) or `size`; the resize is `crop / crop_pct`
        with `crop_pct` from the argument, the processor, or the reference's 224/256 (with `keep_aspect`: of the
        shorter side). Without a processor, the ImageNet defaults (224 crop, ImageNet mean / std) are used.
        """
        if processor is None:
            return cls(random_horizontal_flip=random_horizontal_flip, keep_aspect=keep_aspect)
        crop_size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        crop_hw = _hw(crop_size or processor.size)
        pct = crop_pct or getattr(processor, "crop_pct", None) or REFERENCE_CROP_PCT
        resize_hw = (math.floor(crop_hw[0] / pct + 0.5), math.floor(crop_hw[1] / pct + 0.5))
        if getattr(processor, "do_normalize", True):
            mean = tuple(float(m) for m in np.broadcast_to(processor.image_mean, (3,)))
            std = tuple(float(s) for s in np.broadcast_to(processor.image_std, (3,)))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(crop_hw, resize_hw, mean, std, random_horizontal_flip, keep_aspect=keep_aspect)

    @classmethod
    def for_evaluation(cls, processor: Any | None, crop_pct: float | None = None) -> TransformConfig:
        """The config whose eval transform is `processor`'s own pipeline when `processor` is one that
        [`eval_image_processor`] writes (bilinear resize to a fixed height and width, or of the shorter side to
        `shortest_edge`, then center crop): resize to its `size`, crop to its `crop_size`. Any other processor (or an
        explicit `crop_pct`) gives [`TransformConfig.from_image_processor`]: the training-time rule, crop / crop_pct."""
        size = getattr(processor, "size", None) or {}
        keep_aspect = bool(size.get("shortest_edge")) and not size.get("longest_edge")
        exported = (
            crop_pct is None and getattr(processor, "do_center_crop", False) and getattr(processor, "do_resize", True)
            and (("height" in size and "width" in size) or keep_aspect)
            and getattr(processor, "resample", None) == Image.BILINEAR
        )  # fmt: skip
        config = cls.from_image_processor(processor, crop_pct, random_horizontal_flip=False)
        if not exported:
            return config
        return replace(config, resize_size=_hw(size), keep_aspect=keep_aspect)


class ImageTransform:
    """The reference's train or eval pipeline on one PIL image, returning a normalised C x H x W tensor (C =
    `config.num_channels`: the image is converted to RGB or grayscale first, see [`to_channels`]).

    Args:
        config (`TransformConfig`): sizes and normalisation.
        train (`bool`): random crop and flip (train) or center crop (eval).
        generator (`torch.Generator`, *optional*): source of randomness (default: torch's global generator, which
            the Trainer seeds and each DataLoader worker re-seeds).
        jpeg_draft (`bool`, *optional*): let [`BatchTransform`] decode a JPEG at a reduced scale (1/2, 1/4, 1/8)
            when it is at least twice `resize_size` ([`decode_image`]'s `draft_size`). Default: on for train, off
            for eval. The pixels then differ slightly from a full decode followed by the same resize, which is why
            evaluation stays on full decodes: bit for bit what [`eval_image_processor`] (and `pipeline()`) computes
            from a decoded image.
    """

    def __init__(
        self, config: TransformConfig, train: bool, generator: torch.Generator | None = None,
        jpeg_draft: bool | None = None,
    ):  # fmt: skip
        self.config = config
        self.train = train
        self.generator = generator
        self.jpeg_draft = train if jpeg_draft is None else jpeg_draft

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """The (width, height) a JPEG may be decoded down to (no less), or `None`: full decodes."""
        return (self.config.resize_size[1], self.config.resize_size[0]) if self.jpeg_draft else None

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """The transformed image; `generator` (if given) replaces the instance's source of randomness."""
        config, generator = self.config, generator or self.generator
        height, width = config.resized_size(image.height, image.width)
        # resize the uint8 image (bilinear, anti-aliased), crop and flip it, and only then convert the crop. Training
        # uses torch's uint8 kernel (about 3x faster than PIL's on a 500 x 375 photo, within one level of it);
        # evaluation uses PIL's, bit for bit what `eval_image_processor` (and `pipeline()`) computes
        rgb = to_channels(image, config.num_channels)
        if self.train:
            pixels = random_crop(resize(uint8_tensor(rgb), (height, width)), config.crop_size, generator)
            if config.random_horizontal_flip and bool(torch.rand((), generator=generator) < 0.5):
                pixels = pixels.flip(-1)
        else:
            pixels = center_crop(uint8_tensor(rgb.resize((width, height), Image.BILINEAR)), config.crop_size)
        return normalize(pixels.float().div_(255.0), config.mean, config.std)


# ---------------------------------------------------------------------------------------------------------------------
# Batches for the Trainer
# ---------------------------------------------------------------------------------------------------------------------


def augmentation_generator(seed: int, epoch: int, index: int, view: int = 0) -> torch.Generator:
    """A generator determined by (seed, epoch, example index): the random crop and flip of an example in an epoch
    do not depend on the order examples are read in, on DataLoader workers, or on where a run was resumed. `view` > 0
    draws another, independent augmentation of the same example in the same epoch (a second view)."""
    entropy = [seed, epoch, index] if view == 0 else [seed, epoch, index, view]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class BatchTransform:
    """`Dataset.set_transform` function: decodes the images of a batch, applies an [`ImageTransform`] and returns
    `pixel_values` and `labels` only.

    With a `seed` and an [`INDEX_COLUMN`] in the data, each example's augmentation is drawn from
    [`augmentation_generator`]`(seed, epoch, index)`, so that a run resumed in the middle of an epoch sees the same
    crops and flips as an uninterrupted one; the epoch is set by [`TransformEpochCallback`] (which `SmileTrainer`
    adds). Without them, torch's global generator is used. The epoch is held in shared memory: DataLoader workers,
    persistent ones (`dataloader_persistent_workers=True`) included, read the value the main process last set.

    Args:
        transform (`ImageTransform`): the per-image pipeline.
        image_column (`str`), label_column (`str`): the columns to read (`label_column=None`: unlabelled images,
            `pixel_values` only).
        split (`str`): name of the split, for error messages.
        seed (`int`, *optional*): seed of the per-example augmentation.
    """

    def __init__(self, transform: ImageTransform, image_column: str, label_column: str | None, split: str,
                 seed: int | None = None):  # fmt: skip
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.split = split
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.view = 0

    @property
    def epoch(self) -> int:
        """The epoch whose augmentation the next examples get."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose augmentation the next examples get, in this process and in its DataLoader workers."""
        self._epoch.fill_(epoch)

    def set_view(self, view: int) -> None:
        """Draw the augmentation of view `view` of each example (0: the training view; in this process only: the
        unlabelled stream reads in the main process)."""
        self.view = view

    def _generator(self, index: Any) -> torch.Generator | None:
        if self.seed is None or index is None or not self.transform.train:
            return None
        return augmentation_generator(self.seed, self.epoch, int(index), self.view)

    def _decode(self, value: Any, index: Any) -> Image.Image:
        try:
            return decode_image(value, getattr(self.transform, "draft_size", None))
        except DECODE_ERRORS as error:
            raise DataError(
                f"Cannot decode the image {image_source(value, index)} of the {self.split} split "
                f"({decode_error_text(error)}); "
                "pass --corrupt_images skip to drop undecodable images before training."
            ) from error

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = batch[self.image_column]
        indices = batch.get(INDEX_COLUMN, [None] * len(images))
        pixel_values = [self.transform(self._decode(v, i), self._generator(i)) for v, i in zip(images, indices)]
        if self.label_column is None:  # unlabelled images: no label is read
            return {"pixel_values": pixel_values}
        return {"pixel_values": pixel_values, "labels": [int(label) for label in batch[self.label_column]]}


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` and `labels` of transformed examples into a batch."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }


class TransformEpochCallback(TrainerCallback):
    """Tells the training set's transform which epoch begins (`set_epoch`), when it has one (a [`BatchTransform`]
    attached with `set_transform`). The epoch is `floor(state.epoch)`, also when a run resumes mid-epoch. The
    `Trainer` calls `on_epoch_begin` before it iterates the epoch's DataLoader, and persistent workers read the epoch
    from shared memory, so they see it too.
    """

    def __init__(self, dataset):
        self.transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")

    def on_epoch_begin(self, args, state, control, **kwargs):
        if not hasattr(self.transform, "set_epoch"):
            return
        self.transform.set_epoch(math.floor(state.epoch or 0))
