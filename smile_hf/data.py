# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Image-classification data for transfer learning: dataset presets, image folders, few-shot subsets, label checks
and the train / eval transforms of the SMILE reference, written with torch only (no torchvision).

Everything here fails early with a [`DataError`], a one-line message that names what was expected and what was
found, so that `examples/run_smile.py` can report bad input before any training starts.

The transforms follow the reference (PaddleTransfer's SMILE `finetune.py`):

- train: resize to a square of `resize_size`, random crop of `crop_size`, random horizontal flip, normalise;
- eval: resize to a square of `resize_size`, center crop of `crop_size`, normalise;

with `crop_size`, mean and std read from the checkpoint's image processor and `resize_size = crop_size / crop_pct`
(`crop_pct = 224 / 256` in the reference).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as ImageFeature
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

INDEX_COLUMN = "__example_index__"
"""Column added to every split so that a transform can name the example whose image cannot be decoded."""

REFERENCE_CROP_PCT = 224 / 256
"""Crop size over resize size in the SMILE reference (resize 256 x 256, crop 224)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CORRUPT_IMAGE_POLICIES = ("error", "skip")


class DataError(ValueError):
    """Bad input data (unknown dataset, missing columns, labels out of range, empty folder, corrupt image...).

    The message is one line, meant to be shown to the user as is.
    """


# ---------------------------------------------------------------------------------------------------------------------
# Dataset presets
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetPreset:
    """Where a benchmark dataset lives on the Hub and how it is laid out.

    Args:
        name (`str`): the value of `--dataset`.
        hub_id (`str` or `None`): the Hub dataset id (`owner/name`); `None` for a dataset built offline by `builder`.
        train_split (`str`): split (or `+`-joined splits) to train on.
        eval_split (`str`): split to evaluate on.
        num_labels (`int`): number of classes of the benchmark, checked against the data when it is loaded.
        image_column (`str`): column holding the images.
        label_column (`str`): column holding the class labels.
        config_name (`str`, *optional*): dataset configuration (subset) on the Hub.
        data_dir (`str`, *optional*): folder of the Hub repository that holds the data files.
        revision (`str`, *optional*): branch, tag or commit of the Hub repository.
        homepage (`str`): where the original dataset is described.
        notes (`str`): what differs from the benchmark's usual protocol, if anything.
        builder (`Callable`, *optional*): builds the dataset locally (offline datasets); gets the preset.
    """

    name: str
    hub_id: str | None
    train_split: str
    eval_split: str
    num_labels: int
    image_column: str = "image"
    label_column: str = "label"
    config_name: str | None = None
    data_dir: str | None = None
    revision: str | None = None
    homepage: str = ""
    notes: str = ""
    builder: Callable[[DatasetPreset], DatasetDict] | None = field(default=None, compare=False, repr=False)

    def split_names(self) -> set[str]:
        """Every split name the preset uses."""
        return {s.strip() for split in (self.train_split, self.eval_split) for s in split.split("+")}


def build_digits(preset: DatasetPreset, test_fraction: float = 0.5, seed: int = 0) -> DatasetDict:
    """scikit-learn's `load_digits` (1797 grayscale 8 x 8 digits, ink 0-16) as a `DatasetDict` of PIL images.

    The train / test split is fixed (stratified, seed 0) so that every run evaluates on the same images; few-shot
    subsets are then drawn from `train` with the run's seed (`--train_samples_per_class`).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataError(
            "--dataset digits needs scikit-learn, which ships the images: pip install scikit-learn."
        ) from error

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [Image.fromarray(p, mode="L") for p in pixels]
    names = [str(i) for i in range(preset.num_labels)]
    dataset = Dataset.from_dict({preset.image_column: images, preset.label_column: digits.target.tolist()})
    dataset = dataset.cast_column(preset.image_column, ImageFeature())
    dataset = dataset.cast_column(preset.label_column, ClassLabel(names=names))
    splits = dataset.train_test_split(test_size=test_fraction, stratify_by_column=preset.label_column, seed=seed)
    return DatasetDict({preset.train_split: splits["train"], preset.eval_split: splits["test"]})


DATASET_PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        DatasetPreset(
            "food101", "ethz/food101", "train", "validation", 101,
            homepage="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
            notes="The Hub's 'validation' split is the official test split (250 images per class).",
        ),
        DatasetPreset(
            "cub200", "Donghyun99/CUB-200-2011", "train", "test", 200,
            homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
            notes="Official train / test split (5994 / 5794 images).",
        ),
        DatasetPreset(
            "stanford_cars", "tanganke/stanford_cars", "train", "test", 196,
            homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
            notes="Official train / test split (8144 / 8041 images).",
        ),
        DatasetPreset(
            "fgvc_aircraft", "HuggingFaceM4/FGVC-Aircraft", "train+validation", "test", 100,
            label_column="variant",
            homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
            notes="Variant level (100 classes); trains on trainval, evaluates on test, as the reference.",
        ),
        DatasetPreset(
            "mit_indoor67", "keremberke/indoor-scene-classification", "train", "test", 67,
            label_column="labels", data_dir="full", revision="refs/convert/parquet",
            homepage="https://web.mit.edu/torralba/www/indoor.html",
            notes="Roboflow's 70/20/10 split, not the official 80/20 one; read from the Hub's Parquet conversion.",
        ),
        DatasetPreset(
            "flowers102", "dpdl-benchmark/oxford_flowers102", "train+validation", "test", 102,
            homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
            notes="Official splits: trains on train + validation (2040 images), evaluates on test (6149).",
        ),
        DatasetPreset(
            "oxford_pets", "timm/oxford-iiit-pet", "train", "test", 37,
            homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
            notes="Official trainval / test split (3680 / 3669 images), breed labels.",
        ),
        DatasetPreset(
            "cifar100", "uoft-cs/cifar100", "train", "test", 100,
            image_column="img", label_column="fine_label",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            notes="Fine labels (100 classes), 32 x 32 images upsampled by the transforms.",
        ),
        DatasetPreset(
            "dtd", "tanganke/dtd", "train", "test", 47,
            homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
            notes="Split 1: train + val (3760 images) / test (1880).",
        ),
        DatasetPreset(
            "digits", None, "train", "test", 10,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            notes="Offline: scikit-learn's digits, fixed stratified 50/50 split; the demo trains few-shot.",
            builder=build_digits,
        ),
    )
}  # fmt: skip
"""The datasets `--dataset` knows.

Hub ids and split names were checked against the datasets' Hub cards; column names too where the card lists its
features (cifar100, dtd, flowers102, oxford_pets, mit_indoor67; fgvc_aircraft's `variant` as used by MTEB). They could
not be loaded here (no network): when a preset is loaded, its columns and number of classes are checked and a
mismatch names what was found (`--image_column` / `--label_column` override the preset's). `mit_indoor67`'s Hub repo
is a loading script, which `datasets` >= 4 no longer runs: the preset reads the Hub's automatic Parquet conversion.
"""


def get_preset(name: str) -> DatasetPreset:
    """The preset called `name`, or a [`DataError`] listing the known ones."""
    key = name.strip().lower()
    if key not in DATASET_PRESETS:
        raise DataError(f"Unknown --dataset '{name}'. Known datasets: {', '.join(sorted(DATASET_PRESETS))}.")
    return DATASET_PRESETS[key]


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def load_preset(preset: DatasetPreset, cache_dir: str | None = None, token: str | bool | None = None) -> DatasetDict:
    """Load a preset as a `DatasetDict` with its train split as `"train"` and its eval split as `"validation"`."""
    if preset.builder is not None:
        splits = preset.builder(preset)
        return DatasetDict(train=splits[preset.train_split], validation=splits[preset.eval_split])
    from datasets import load_dataset

    kwargs = {"name": preset.config_name, "data_dir": preset.data_dir, "revision": preset.revision}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    loaded = {}
    for key, split in (("train", preset.train_split), ("validation", preset.eval_split)):
        try:
            loaded[key] = load_dataset(preset.hub_id, split=split, cache_dir=cache_dir, token=token, **kwargs)
        except Exception as error:  # network, missing split, auth: one clear line instead of a traceback
            raise DataError(
                f"Cannot load split '{split}' of dataset '{preset.hub_id}' (--dataset {preset.name}): "
                f"{_one_line(error)}"
            ) from error
    return DatasetDict(loaded)


def image_files(directory: str) -> list[str]:
    """Image files (any extension PIL can read) under `directory`, recursively, sorted."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    found = []
    for root, _, files in os.walk(directory):
        found.extend(os.path.join(root, f) for f in files if os.path.splitext(f)[1].lower() in extensions)
    return sorted(found)


def check_image_folder(directory: str, flag: str) -> None:
    """Raise a [`DataError`] unless `directory` exists and holds at least one image."""
    if not os.path.isdir(directory):
        raise DataError(f"{flag} '{directory}' does not exist or is not a directory.")
    if not image_files(directory):
        raise DataError(
            f"{flag} '{directory}' contains no image files; expected one sub-folder per class with images inside "
            "(e.g. train/cat/001.jpg)."
        )


def load_image_folders(train_dir: str, validation_dir: str | None = None, cache_dir: str | None = None) -> DatasetDict:
    """Load `--train_dir` (and `--validation_dir`) laid out as `<dir>/<class name>/<image>` with `imagefolder`."""
    from datasets import load_dataset

    check_image_folder(train_dir, "--train_dir")
    data_files = {"train": os.path.join(train_dir, "**")}
    if validation_dir is not None:
        check_image_folder(validation_dir, "--validation_dir")
        data_files["validation"] = os.path.join(validation_dir, "**")
    try:
        return load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    except Exception as error:
        raise DataError(f"Cannot read the image folders {sorted(data_files.values())}: {_one_line(error)}") from error


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
        splits = DatasetDict({k: v.cast_column(label_column, ClassLabel(names=names)) for k, v in splits.items()})
        return splits, names
    if train_values and not isinstance(train_values[0], (int, np.integer)):
        raise DataError(
            f"Column '{label_column}' holds {type(train_values[0]).__name__} values, not class labels; "
            "pass --label_column to name the column with the classes."
        )
    num_labels = max(int(max(split[label_column], default=0)) for split in splits.values()) + 1
    return splits, [str(i) for i in range(num_labels)]


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


def sample_per_class(dataset: Dataset, label_column: str, samples_per_class: int, seed: int) -> Dataset:
    """A seeded few-shot subset: `samples_per_class` examples of every class (all of a class that has fewer).

    The result keeps the original order of the examples.
    """
    if samples_per_class < 1:
        raise DataError(f"--train_samples_per_class must be >= 1, got {samples_per_class}.")
    labels = np.asarray(dataset[label_column])
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size < samples_per_class:
            logger.warning(f"Class {label} has only {members.size} examples (< {samples_per_class}); using them all.")
        chosen.append(rng.choice(members, size=min(samples_per_class, members.size), replace=False))
    return dataset.select(np.sort(np.concatenate(chosen)).tolist())


def truncate(dataset: Dataset, max_samples: int | None, seed: int) -> Dataset:
    """At most `max_samples` examples, drawn at random with `seed` (the whole dataset when `None`)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples < 1:
        raise DataError(f"--max_*_samples must be >= 1, got {max_samples}.")
    return dataset.shuffle(seed=seed).select(range(max_samples))


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------


def decode_image(value: Any) -> Image.Image:
    """A PIL image from what a dataset column may hold: a PIL image, `{"bytes", "path"}`, a path, or an array."""
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
    image = Image.open(source)
    image.load()  # decode now, so that a truncated or corrupt file fails here
    return image


def _high_bit_depth_to_uint8(image: Image.Image) -> Image.Image:
    """8-bit grayscale from 16/32-bit integer or float grayscale ('I;16', 'I', 'F')."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if array.size and array.max() <= 1.0 else 255.0
    else:
        top = 65535.0 if array.size and array.max() > 255 else 255.0
    return Image.fromarray(np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB.

    Grayscale ('L', '1', 16-bit, float) is replicated to three channels, CMYK and YCbCr are converted, palette images
    are expanded, and images with transparency (RGBA, LA, PA, palette with a transparent colour) are composited on a
    white `background`.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _high_bit_depth_to_uint8(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float tensor 3 x H x W in [0, 1]."""
    array = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


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
    """

    crop_size: tuple[int, int] = (224, 224)
    resize_size: tuple[int, int] = (256, 256)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    random_horizontal_flip: bool = True

    @classmethod
    def from_image_processor(
        cls, processor: Any | None, crop_pct: float | None = None, random_horizontal_flip: bool = True
    ) -> TransformConfig:
        """Read the crop size and normalisation of a checkpoint's image processor.

        The crop is the processor's `crop_size` (when it center-crops) or `size`; the resize is `crop / crop_pct`
        with `crop_pct` from the argument, the processor, or the reference's 224/256. Without a processor, the
        ImageNet defaults (224 crop, ImageNet mean / std) are used.
        """
        if processor is None:
            return cls(random_horizontal_flip=random_horizontal_flip)
        crop_size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        crop_hw = _hw(crop_size or processor.size)
        pct = crop_pct or getattr(processor, "crop_pct", None) or REFERENCE_CROP_PCT
        resize_hw = (math.floor(crop_hw[0] / pct + 0.5), math.floor(crop_hw[1] / pct + 0.5))
        if getattr(processor, "do_normalize", True):
            mean = tuple(float(m) for m in np.broadcast_to(processor.image_mean, (3,)))
            std = tuple(float(s) for s in np.broadcast_to(processor.image_std, (3,)))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(crop_hw, resize_hw, mean, std, random_horizontal_flip)


class ImageTransform:
    """The reference's train or eval pipeline on one PIL image, returning a normalised 3 x H x W tensor.

    Args:
        config (`TransformConfig`): sizes and normalisation.
        train (`bool`): random crop and flip (train) or center crop (eval).
        generator (`torch.Generator`, *optional*): source of randomness (default: torch's global generator, which
            the Trainer seeds and each DataLoader worker re-seeds).
    """

    def __init__(self, config: TransformConfig, train: bool, generator: torch.Generator | None = None):
        self.config = config
        self.train = train
        self.generator = generator

    def __call__(self, image: Image.Image) -> torch.Tensor:
        config = self.config
        pixels = resize(pil_to_tensor(image), config.resize_size)
        if self.train:
            pixels = random_crop(pixels, config.crop_size, self.generator)
            if config.random_horizontal_flip and bool(torch.rand((), generator=self.generator) < 0.5):
                pixels = pixels.flip(-1)
        else:
            pixels = center_crop(pixels, config.crop_size)
        return normalize(pixels, config.mean, config.std)


# ---------------------------------------------------------------------------------------------------------------------
# Batches for the Trainer
# ---------------------------------------------------------------------------------------------------------------------


class BatchTransform:
    """`Dataset.set_transform` function: decodes the images of a batch, applies an [`ImageTransform`] and returns
    `pixel_values` and `labels` only.

    Args:
        transform (`ImageTransform`): the per-image pipeline.
        image_column (`str`), label_column (`str`): the columns to read.
        split (`str`): name of the split, for error messages.
    """

    def __init__(self, transform: ImageTransform, image_column: str, label_column: str, split: str):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.split = split

    def _decode(self, value: Any, index: Any) -> Image.Image:
        try:
            return decode_image(value)
        except (OSError, UnidentifiedImageError, TypeError, ValueError, SyntaxError) as error:
            raise DataError(
                f"Cannot decode the image of example {index} of the {self.split} split ({_one_line(error)}); "
                "pass --corrupt_images skip to drop undecodable images before training."
            ) from error

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = batch[self.image_column]
        indices = batch.get(INDEX_COLUMN, [None] * len(images))
        return {
            "pixel_values": [self.transform(self._decode(v, i)) for v, i in zip(images, indices)],
            "labels": [int(label) for label in batch[self.label_column]],
        }


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` and `labels` of transformed examples into a batch."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }


def find_corrupt_images(dataset: Dataset, image_column: str, chunk_size: int = 256) -> list[int]:
    """Positions of the examples whose image cannot be decoded (the image column must not be auto-decoded).

    Reads `chunk_size` examples at a time, so that large datasets are never held in memory at once.
    """
    bad = []
    for start in range(0, len(dataset), chunk_size):
        for offset, value in enumerate(dataset[start : start + chunk_size][image_column]):
            try:
                decode_image(value)
            except (OSError, UnidentifiedImageError, TypeError, ValueError, SyntaxError):
                bad.append(start + offset)
    return bad


def without_image_decoding(dataset: Dataset, image_column: str) -> Dataset:
    """`dataset` with the image column left undecoded (`{"bytes", "path"}`), so that decoding errors can be caught
    per example."""
    if isinstance(dataset.features[image_column], ImageFeature):
        return dataset.cast_column(image_column, ImageFeature(decode=False))
    return dataset


def handle_corrupt_images(dataset: Dataset, image_column: str, policy: str, split: str) -> Dataset:
    """With `policy="skip"`, scan `dataset` and drop the examples whose image cannot be decoded, logging their
    indices; with `"error"`, leave it: the first undecodable image stops training with its index."""
    if policy not in CORRUPT_IMAGE_POLICIES:
        raise DataError(f"--corrupt_images must be one of {', '.join(CORRUPT_IMAGE_POLICIES)}, got '{policy}'.")
    if policy == "error":
        return dataset
    bad = find_corrupt_images(dataset, image_column)
    if bad:
        indices = dataset[INDEX_COLUMN] if INDEX_COLUMN in dataset.column_names else range(len(dataset))
        named = [int(indices[b]) for b in bad]
        logger.warning(f"Skipping {len(bad)} undecodable image(s) of the {split} split, at example(s) {named[:20]}.")
        keep = sorted(set(range(len(dataset))) - set(bad))
        dataset = dataset.select(keep)
    return dataset


def with_example_index(dataset: Dataset) -> Dataset:
    """`dataset` with an [`INDEX_COLUMN`] holding each example's position (kept through later selections)."""
    if INDEX_COLUMN in dataset.column_names:
        return dataset
    return dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))


# ---------------------------------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Train and eval splits ready for [`set_transforms`], with what is known about them.

    Attributes:
        train (`Dataset`), eval (`Dataset`): the splits, images not yet decoded.
        label_names (`list[str]`): class names, indexed by label id.
        image_column (`str`), label_column (`str`): the columns used.
        description (`str`): where the data came from (for logs, results and model cards).
    """

    train: Dataset
    eval: Dataset
    label_names: list[str]
    image_column: str
    label_column: str
    description: str

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
        corrupt_images: `"error"` (stop at the first undecodable image, naming it) or `"skip"` (drop them first).
        seed: seed of every random choice here.
        cache_dir, token: passed to `datasets.load_dataset`.
    """
    if corrupt_images not in CORRUPT_IMAGE_POLICIES:
        raise DataError(f"--corrupt_images must be one of {', '.join(CORRUPT_IMAGE_POLICIES)}, got '{corrupt_images}'.")
    if (dataset is None) == (train_dir is None):
        raise DataError("Pass exactly one of --dataset NAME (a preset) or --train_dir DIR (your own image folders).")
    if dataset is not None:
        preset = get_preset(dataset)
        splits = load_preset(preset, cache_dir=cache_dir, token=token)
        image_column, label_column = image_column or preset.image_column, label_column or preset.label_column
        description = preset.hub_id or f"{preset.name} (built in)"
    else:
        preset = None
        splits = load_image_folders(train_dir, validation_dir, cache_dir=cache_dir)
        image_column, label_column = image_column or "image", label_column or "label"
        description = train_dir
    for name, split in splits.items():
        check_columns(split, image_column, label_column, name)
    if "validation" not in splits:
        splits = split_off_validation(splits["train"], train_val_split, seed, label_column)
    splits, label_names = encode_labels(splits, label_column)
    if preset is not None and len(label_names) != preset.num_labels:
        logger.warning(
            f"--dataset {preset.name}: found {len(label_names)} classes, the preset expects {preset.num_labels}."
        )
    num_labels = num_labels or len(label_names)
    for name, split in splits.items():
        check_label_range(split, label_column, num_labels, name)

    train, evaluation = (with_example_index(splits[k]) for k in ("train", "validation"))
    if train_samples_per_class is not None:
        train = sample_per_class(train, label_column, train_samples_per_class, seed)
    train, evaluation = truncate(train, max_train_samples, seed), truncate(evaluation, max_eval_samples, seed)
    train, evaluation = (
        handle_corrupt_images(without_image_decoding(split, image_column), image_column, corrupt_images, name)
        for split, name in ((train, "train"), (evaluation, "validation"))
    )
    if len(train) == 0 or len(evaluation) == 0:
        raise DataError(f"Nothing left to train or evaluate on ({len(train)} train, {len(evaluation)} eval examples).")
    return PreparedData(
        train,
        evaluation,
        label_names[:num_labels] + [str(i) for i in range(len(label_names), num_labels)],
        image_column,
        label_column,
        description,
    )


def set_transforms(data: PreparedData, config: TransformConfig) -> None:
    """Attach the train and eval pipelines to `data`'s splits (`set_transform`: applied on access, per batch)."""
    for split, train, name in ((data.train, True, "train"), (data.eval, False, "validation")):
        split.set_transform(BatchTransform(ImageTransform(config, train), data.image_column, data.label_column, name))


__all__ = [
    "CORRUPT_IMAGE_POLICIES",
    "DATASET_PRESETS",
    "BatchTransform",
    "DataError",
    "DatasetPreset",
    "ImageTransform",
    "PreparedData",
    "TransformConfig",
    "check_columns",
    "check_image_folder",
    "check_label_range",
    "collate",
    "decode_image",
    "encode_labels",
    "find_corrupt_images",
    "get_preset",
    "handle_corrupt_images",
    "load_image_folders",
    "load_preset",
    "pil_to_tensor",
    "prepare_datasets",
    "sample_per_class",
    "set_transforms",
    "split_off_validation",
    "to_rgb",
    "truncate",
    "with_example_index",
    "without_image_decoding",
]
