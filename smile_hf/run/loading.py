# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Loading for a run: the checkpoint checked before anything else (config only), its image processor, the data with
its transforms, the model from random weights or as it was saved."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from huggingface_hub import constants as hub_constants
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

from ..config import SmileTrainingArguments
from ..data import (
    PreparedData,
    TextData,
    TransformConfig,
    get_preset,
    load_unlabeled_folder,
    one_line,
    prepare_datasets,
    set_transforms,
    unlabeled_from_train,
)
from ..methods import get_regularizer_class, unlabeled_methods
from ..modeling import load_image_processor
from .arguments import DataTrainingArguments, InputError, ModelArguments
from .text import (
    check_text_model,
    is_text_config,
    load_tokenizer,
    load_trained_text_model,
    prepare_text_data,
    random_init_text_model,
)
from .validation_source import hold_out_validation, validation_source

logger = logging.getLogger(__name__)


def is_offline() -> bool:
    """Whether the Hugging Face Hub is switched off (`HF_HUB_OFFLINE=1`, read by huggingface_hub at import)."""
    return bool(hub_constants.HF_HUB_OFFLINE)


def dataset_download(data_args: DataTrainingArguments | None, cache_dir: str | None = None) -> str | None:
    """What to run to download the Hub dataset of `--dataset` when it is not in the `datasets` cache (offline
    only: a Hub preset cached by an earlier run loads offline), else None."""
    if data_args is None or data_args.dataset is None:
        return None
    preset = get_preset(data_args.dataset)
    if preset.hub_id is None:
        return None
    try:
        import datasets

        kwargs = {"name": preset.config_name, "data_dir": preset.data_dir, "revision": preset.revision}
        datasets.load_dataset_builder(preset.hub_id, cache_dir=cache_dir, **{k: v for k, v in kwargs.items() if v})
        return None
    except Exception:  # not cached (offline), or anything else: name it
        return f"the dataset {preset.hub_id} (`hf download --repo-type dataset {preset.hub_id}`)"


def check_model(model_args: ModelArguments, data_args: DataTrainingArguments | None = None) -> None:
    """Raise an [`InputError`] unless the checkpoint can be read and is an image classifier (config only). Offline,
    the error names everything the run would download: the model and, if not cached, the preset's dataset."""
    name = model_args.model_name_or_path
    if looks_like_a_path(name) and not os.path.isdir(name):
        raise InputError(
            f"--model_name_or_path '{name}' does not exist: no such folder ({os.path.abspath(name)}). Pass the folder "
            "of a checkpoint (with its config.json), or a Hub id such as microsoft/resnet-50."
        )
    try:
        config = AutoConfig.from_pretrained(
            name, cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
            trust_remote_code=model_args.trust_remote_code,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        check_remote_code(model_args, error)
        if is_offline() and not os.path.isdir(name):
            missing = [f"the model {name} (`hf download {name}`)", dataset_download(data_args, model_args.cache_dir)]
            raise InputError(
                f"offline (HF_HUB_OFFLINE=1) and not in the local cache: download {' and '.join(filter(None, missing))} "
                "once online, or pass a local --model_name_or_path folder."
            ) from error
        where = "not a local folder with a config.json, and the Hugging Face Hub"
        raise InputError(
            f"Cannot load --model_name_or_path '{name}': {where} cannot be reached or has no such model "
            f"(offline?). Pass a local checkpoint folder. [{type(error).__name__}]"
        ) from error
    if check_text_model(config, name, data_args):  # a text classifier, for text data
        return
    if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING and not _has_remote_classifier(config):
        raise InputError(
            f"--model_name_or_path '{name}' is a '{config.model_type}' model, not an image classifier: "
            "AutoModelForImageClassification cannot load it. Use an image classification checkpoint."
        )


def looks_like_a_path(name: str) -> bool:
    """Whether `--model_name_or_path` can only be a local path, not a Hub id (`name` or `org/name`): absolute, starting
    with `.` or `~`, with more than one separator or a backslash, ending with a separator, or inside an existing
    folder (`runs/mine` where `runs` exists)."""
    parent = os.path.dirname(name.rstrip("/\\"))
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name
        or name.endswith(("/", os.sep)) or (bool(parent) and os.path.isdir(parent))
    )  # fmt: skip


def check_remote_code(model_args: ModelArguments, error: Exception) -> None:
    """Raise an [`InputError`] naming `--trust_remote_code` when loading `--model_name_or_path` failed with `error`
    because the checkpoint needs its own model code (the `auto_map` of its `config.json`) and it was not allowed."""
    if not model_args.trust_remote_code and isinstance(error, ValueError) and "trust_remote_code" in str(error):
        raise InputError(
            f"--model_name_or_path '{model_args.model_name_or_path}' needs its own model code (the auto_map of its "
            "config.json), which runs only with --trust_remote_code True: pass it if you trust that code, or use a "
            "checkpoint of an architecture transformers supports."
        ) from error


def _has_remote_classifier(config) -> bool:
    return "AutoModelForImageClassification" in (getattr(config, "auto_map", None) or {})


def loading_kwargs(model_args: ModelArguments) -> dict:
    """Where and how to load the checkpoint: the same for the student, the source model and the image processor."""
    return {
        "cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }  # fmt: skip


def load_processor(model_args: ModelArguments, data_args: DataTrainingArguments | None = None):
    """The checkpoint's image processor, or `None` (ImageNet defaults) if it has none; its tokenizer for text data
    (`data_args.is_text()`)."""
    if data_args is not None and data_args.is_text():
        return load_tokenizer(model_args, **loading_kwargs(model_args))
    processor = load_image_processor(model_args.model_name_or_path, **loading_kwargs(model_args))
    if processor is None:
        logger.warning("The checkpoint has no image processor: using 224 x 224 crops and ImageNet mean / std.")
    return processor


def prepare_data(
    data_args: DataTrainingArguments,
    model_args: ModelArguments,
    seed: int,
    processor,
    config: TransformConfig | None = None,
    disable_tqdm: bool = False,
    validation: bool = False,
    calibration: bool = False,
) -> PreparedData:
    """Load and check the data of `data_args` and attach the transforms of `config` (default: read from the
    checkpoint's `processor` and `--crop_pct`); `disable_tqdm` hides the undecodable-image scan's progress bar.
    `validation` holds a validation split out of the training data ([`carve_validation`] with
    `--validation_split_fraction` / `--validation_samples_per_class` and `seed`) into `data.validation`, or takes the
    dataset's own one where `--validation_source` says so ([`validation_source`]): the final run then trains on it
    too (`data.search_train` is the training data without it), unless `calibration` fits a temperature on it.
    Text data (`data_args.is_text()`) go through [`prepare_text_data`], `processor` the tokenizer."""
    if data_args.is_text():
        return prepare_text_data(data_args, model_args, seed, processor, validation, calibration)
    own = validation and validation_source(data_args) == "dataset"
    data = prepare_datasets(
        **data_args.dataset_kwargs(model_args), seed=seed, disable_tqdm=disable_tqdm, own_validation=own,
        train_on_validation=not calibration,
    )  # fmt: skip
    if validation:
        hold_out_validation(data, data_args, seed, own)
    add_unlabeled(data, data_args, model_args, seed, disable_tqdm)
    if config is None:
        config = TransformConfig.from_image_processor(
            processor, data_args.crop_pct, data_args.random_horizontal_flip, data_args.keep_aspect
        )
    set_transforms(data, config, seed)
    return data


def check_unlabeled_options(data_args: DataTrainingArguments, methods: list[str]) -> None:
    """Refuse, before any data is loaded, unlabelled images that none of `methods` can use (one method: it cannot
    use them; a comparison passes them to the methods that can), and a method that needs them without any."""
    given = data_args.unlabeled_dir is not None or data_args.unlabeled_from_train
    needing = [m for m in methods if get_regularizer_class(m).requires_unlabeled]
    if needing and data_args.is_text():
        raise InputError(
            f"Method '{needing[0]}' trains on unlabelled images, which text runs have none of: use another method."
        )
    using = [m for m in methods if get_regularizer_class(m).unlabeled_views is not None]
    if given and not using:
        raise InputError(
            f"Method '{methods[0]}' cannot use unlabelled images: drop --unlabeled_dir / --unlabeled_from_train, or "
            f"use a method that uses them ({', '.join(unlabeled_methods())})."
            if len(methods) == 1 else f"None of the methods {', '.join(methods)} can use unlabelled images: drop "
            f"--unlabeled_dir / --unlabeled_from_train, or add one that uses them ({', '.join(unlabeled_methods())})."
        )
    if needing and not given:
        raise InputError(f"Method '{needing[0]}' trains on unlabelled images: add --unlabeled_dir or --unlabeled_from_train.")


def unlabeled_for(args: SmileTrainingArguments, data: PreparedData) -> tuple[SmileTrainingArguments, Any]:
    """The arguments and the unlabelled images of `data` for `args.method`: none for a method that cannot use them
    (a comparison passes them to those that can, see [`check_unlabeled_options`]), with `unlabeled_batch_ratio`,
    which only those read, unset."""
    unlabeled = getattr(data, "unlabeled", None)
    if unlabeled is None or get_regularizer_class(args.method).unlabeled_views is not None:
        return args, unlabeled
    return replace(args, unlabeled_batch_ratio=None), None


def add_unlabeled(
    data: PreparedData, data_args: DataTrainingArguments, model_args: ModelArguments, seed: int, disable_tqdm: bool
) -> None:
    """`data.unlabeled` from `--unlabeled_dir` or `--unlabeled_from_train` (the full training split of the same
    arguments, less the training subset and the validation split held out of it: never an evaluation image)."""
    if data_args.unlabeled_dir is not None and data_args.unlabeled_from_train:
        raise InputError("Pass one of --unlabeled_dir and --unlabeled_from_train, not both.")
    if data_args.unlabeled_dir is not None:
        data.unlabeled = load_unlabeled_folder(data_args.unlabeled_dir, data_args.corrupt_images, not disable_tqdm)
        data.unlabeled_source = "unlabeled_dir"
    elif data_args.unlabeled_from_train:
        if data_args.train_samples_per_class is None and data_args.max_train_samples is None:
            raise InputError(
                "--unlabeled_from_train uses the training images a subset leaves out: add --train_samples_per_class "
                "or --max_train_samples."
            )
        kwargs = {**data_args.dataset_kwargs(model_args), "train_samples_per_class": None, "max_train_samples": None}
        full = prepare_datasets(**kwargs, seed=seed, disable_tqdm=disable_tqdm)
        data.unlabeled = unlabeled_from_train(full.train, data.label_column, data.train, data.validation)
        data.unlabeled_source = "the training images left out of the subset, labels dropped"


def random_init_model(model_args: ModelArguments, data: PreparedData, **load_kwargs):
    """The checkpoint's architecture with random weights and a head for the data's classes."""
    if isinstance(data, TextData):
        return random_init_text_model(model_args, data, **load_kwargs)
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, num_labels=len(data.label_names), id2label=data.id2label,
        label2id={v: k for k, v in data.id2label.items()}, **load_kwargs,
    )  # fmt: skip
    return AutoModelForImageClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)


def student(model_args: ModelArguments, training_args: SmileTrainingArguments, data: PreparedData, from_scratch: bool):
    """The `model` of the run's `SmileTrainer`: the checkpoint's architecture with random weights (`from_scratch`),
    else the checkpoint's name, with the loading options and the data's classes set in `model_init_kwargs`
    (SmileTrainer loads the student with a new head for the classes and, if the method needs it, the source model)."""
    if from_scratch:
        return random_init_model(model_args, data, **loading_kwargs(model_args))
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}), **loading_kwargs(model_args),
        "num_labels": len(data.label_names), "id2label": data.id2label,
    }  # fmt: skip
    return model_args.model_name_or_path


def load_trained_model(model_args: ModelArguments):
    """The image (or text) classifier of `--model_name_or_path` as it was saved (its own head and classes)."""
    try:
        if is_text_config(AutoConfig.from_pretrained(model_args.model_name_or_path, **loading_kwargs(model_args))):
            return load_trained_text_model(model_args, **loading_kwargs(model_args))
        return AutoModelForImageClassification.from_pretrained(model_args.model_name_or_path, **loading_kwargs(model_args))
    except ValueError as error:
        check_remote_code(model_args, error)
        raise
    except (OSError, SafetensorError) as error:
        raise InputError(
            f"Cannot load the weights of --model_name_or_path '{model_args.model_name_or_path}': {one_line(error)}"
        ) from error

