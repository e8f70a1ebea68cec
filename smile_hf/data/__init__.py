# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Image-classification data for transfer learning: dataset presets, image folders, few-shot subsets, label checks
and the train / eval transforms of the SMILE reference, written with torch only (no torchvision).

Everything here fails early with a [`DataError`], a one-line message that names what was expected and what was
found, so that a run script can report bad input before any training starts.

- `smile_hf.data.presets`: the `--dataset` presets and their loading, and `--train_dir` image folders;
- `smile_hf.data.transforms`: image decoding, torch-only resize / crop / normalise, the per-image and per-batch
  transforms and `collate`;
- `smile_hf.data.prepare`: label checks and encoding, subsets, `prepare_datasets` and `set_transforms`;
- `smile_hf.data.export`: the image processor saved with an exported model (the evaluation transform);
- `smile_hf.data.scan`: undecodable images, and images the conversion to RGB loses something of;
- `smile_hf.data.classes`: [`align_to_model_classes`], a trained model's label ids on data of its classes;
- `smile_hf.data.unlabeled`: unlabelled images (a folder, or the training images a subset left out);
- `smile_hf.data.validation`: [`carve_validation`], a stratified, seeded validation split held out of train;
- `smile_hf.data.text`: text classification: CSV / JSON / Parquet files, text presets, tokenization;
- `smile_hf.data.offline_text`: the offline Debian descriptions of `--dataset debian_sections`;
- `smile_hf.data.errors`: [`DataError`].

Every public name of these modules can be imported from `smile_hf.data` directly.
"""

from .classes import align_to_model_classes
from .errors import DataError, one_line
from .export import eval_image_processor, evaluation_processor
from .labels import encode_labels
from .offline_text import build_debian_sections
from .prepare import (
    PreparedData,
    check_columns,
    check_label_range,
    prepare_datasets,
    sample_per_class,
    set_transforms,
    split_off_validation,
    truncate,
    with_example_index,
)
from .presets import (
    DATASET_PRESETS,
    TEXT_PRESETS,
    DatasetPreset,
    DataSource,
    build_digits,
    check_image_folder,
    empty_class_folders,
    get_preset,
    image_files,
    load_image_folders,
    load_preset,
    resolved_revision,
)
from .scan import (
    CORRUPT_IMAGE_POLICIES,
    ImageScan,
    find_corrupt_images,
    handle_corrupt_images,
    scan_images,
    warn_lossy_images,
    without_image_decoding,
)
from .text import (
    TEXT_FILE_TYPES,
    TextData,
    check_text_columns,
    check_texts,
    load_text_files,
    parse_text_columns,
    prepare_text_datasets,
    text_collator,
    tokenize_data,
    tokenize_split,
)
from .transforms import (
    DECODE_ERRORS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INDEX_COLUMN,
    MAX_IMAGE_PIXELS_ENV,
    REFERENCE_CROP_PCT,
    BatchTransform,
    ImageTransform,
    TransformConfig,
    TransformEpochCallback,
    augmentation_generator,
    center_crop,
    collate,
    crop,
    decode_error_text,
    decode_image,
    lossy_conversion,
    max_image_pixels,
    normalize,
    pil_to_tensor,
    random_crop,
    resize,
    to_rgb,
)
from .unlabeled import load_unlabeled_folder, unlabeled_from_train
from .validation import (
    DEFAULT_VALIDATION_FRACTION,
    ValidationSplit,
    carve_validation,
    held_out_counts,
    own_validation_split,
)

__all__ = [
    "align_to_model_classes",
    "CORRUPT_IMAGE_POLICIES",
    "DATASET_PRESETS",
    "TEXT_FILE_TYPES",
    "TEXT_PRESETS",
    "TextData",
    "check_text_columns",
    "check_texts",
    "load_text_files",
    "parse_text_columns",
    "prepare_text_datasets",
    "text_collator",
    "tokenize_data",
    "tokenize_split",
    "build_debian_sections",
    "DECODE_ERRORS",
    "MAX_IMAGE_PIXELS_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INDEX_COLUMN",
    "REFERENCE_CROP_PCT",
    "BatchTransform",
    "DataError",
    "one_line",
    "DataSource",
    "DatasetPreset",
    "resolved_revision",
    "ImageTransform",
    "TransformEpochCallback",
    "augmentation_generator",
    "eval_image_processor",
    "evaluation_processor",
    "PreparedData",
    "TransformConfig",
    "build_digits",
    "center_crop",
    "check_columns",
    "check_image_folder",
    "empty_class_folders",
    "check_label_range",
    "collate",
    "crop",
    "decode_error_text",
    "decode_image",
    "max_image_pixels",
    "encode_labels",
    "find_corrupt_images",
    "get_preset",
    "handle_corrupt_images",
    "ImageScan",
    "lossy_conversion",
    "scan_images",
    "warn_lossy_images",
    "image_files",
    "load_image_folders",
    "load_preset",
    "normalize",
    "pil_to_tensor",
    "prepare_datasets",
    "random_crop",
    "resize",
    "sample_per_class",
    "set_transforms",
    "split_off_validation",
    "to_rgb",
    "truncate",
    "with_example_index",
    "without_image_decoding",
    "DEFAULT_VALIDATION_FRACTION",
    "ValidationSplit",
    "carve_validation",
    "held_out_counts",
    "own_validation_split",
    "load_unlabeled_folder",
    "unlabeled_from_train",
]
