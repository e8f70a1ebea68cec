# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""A run on text: the checkpoint recognised as a sequence classifier (config only), its tokenizer, the text data
tokenized for it, and `--predict_file` classified into `predictions.csv`."""

from __future__ import annotations

import csv
import logging
import os

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
)

from ..config import SmileTrainingArguments
from ..data import (
    DataError,
    TextData,
    check_text_columns,
    check_texts,
    parse_text_columns,
    prepare_text_datasets,
    text_collator,
    tokenize_data,
    tokenize_split,
)
from ..data.text import default_text_columns, read_text_file
from ..inference import PREDICTIONS_FILE
from .arguments import DataTrainingArguments, InputError, ModelArguments
from .validation_source import hold_out_validation, validation_source

logger = logging.getLogger(__name__)


def is_text_config(config) -> bool:
    """Whether a checkpoint's config is that of a text classifier: an architecture of
    `AutoModelForSequenceClassification` (and not an image classifier), or a `*ForSequenceClassification` in its
    `architectures`."""
    if type(config) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        return False
    named = any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or ())
    return named or type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING


def check_text_model(config, name: str, data_args: DataTrainingArguments | None) -> bool:
    """Whether the run is a text run: a text checkpoint with text data (or no data). A text checkpoint with image
    data, or text data with another checkpoint, is one [`InputError`]."""
    text_data = data_args is not None and data_args.is_text()
    text_model = is_text_config(config)
    if text_data and not text_model:
        raise InputError(
            f"--model_name_or_path '{name}' is a '{config.model_type}' model, not a text classifier: "
            "AutoModelForSequenceClassification cannot load it, and the data (--train_file, --predict_file or a text "
            "preset) are text. Use a text checkpoint (e.g. google-bert/bert-base-uncased)."
        )
    if text_model and data_args is not None and (data_args.train_dir or data_args.predict_dir or (
            data_args.dataset and not data_args.is_text())):  # fmt: skip
        raise InputError(
            f"--model_name_or_path '{name}' is a text classifier ('{config.model_type}') and the data are images: "
            "pass --train_file / --validation_file (CSV, JSON or Parquet) or a text --dataset preset."
        )
    return text_model


def load_tokenizer(model_args: ModelArguments, **loading_kwargs):
    """The checkpoint's tokenizer, or an [`InputError`] (a text model needs one)."""
    try:
        return AutoTokenizer.from_pretrained(model_args.model_name_or_path, **loading_kwargs)
    except (OSError, ValueError) as error:
        raise InputError(
            f"--model_name_or_path '{model_args.model_name_or_path}' has no tokenizer that AutoTokenizer can load "
            f"({type(error).__name__}): a text run tokenizes with the checkpoint's own tokenizer."
        ) from error


def prepare_text_data(
    data_args: DataTrainingArguments,
    model_args: ModelArguments,
    seed: int,
    tokenizer,
    validation: bool = False,
    calibration: bool = False,
) -> TextData:
    """Load and check the text data of `data_args` ([`prepare_text_datasets`]), hold out a validation split where
    `validation` asks (as `prepare_data` does for images), and tokenize every split with `tokenizer`, truncated to
    `--max_seq_length` tokens."""
    own = validation and validation_source(data_args) == "dataset"
    data = prepare_text_datasets(**data_args.text_dataset_kwargs(model_args), seed=seed, own_validation=own)
    if validation:
        hold_out_validation(data, data_args, seed, own)
    tokenize_data(data, tokenizer, data_args.max_seq_length)
    return data


def random_init_text_model(model_args: ModelArguments, data, **load_kwargs):
    """The text checkpoint's architecture with random weights and a head for the data's classes."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, num_labels=len(data.label_names), id2label=data.id2label,
        label2id={v: k for k, v in data.id2label.items()}, **load_kwargs,
    )  # fmt: skip
    return AutoModelForSequenceClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)


def load_trained_text_model(model_args: ModelArguments, **load_kwargs):
    """The text classifier of `--model_name_or_path` as it was saved (its own head and classes)."""
    return AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path, **load_kwargs)


@torch.no_grad()
def classify_texts(model, tokenizer, dataset, top_k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(top-k label ids, their probabilities) of every example of a tokenized `dataset`, in order."""
    model.eval()
    collate, device = text_collator(tokenizer), next(model.parameters()).device
    ids, scores = [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits.float()
        probabilities = logits.softmax(-1)
        top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        ids.append(top.indices.cpu().numpy())
        scores.append(top.values.cpu().numpy())
    return np.concatenate(ids), np.concatenate(scores)


def predict_text_file(
    model, tokenizer, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> str | None:
    """Classify the texts of `--predict_file` with `model` and write `<output_dir>/predictions.csv` (the row, the
    text, then the top-k labels and scores); return its path (main process only, `None` on the others)."""
    if not training_args.should_save:
        return None
    dataset = read_text_file(data_args.predict_file, "--predict_file")
    columns = parse_text_columns(data_args.text_column_names) or default_text_columns(dataset.column_names)
    check_text_columns(dataset, columns, None, "--predict_file")
    check_texts(dataset, columns, "--predict_file")
    if len(dataset) == 0:
        raise DataError(f"--predict_file '{data_args.predict_file}' has no rows.")
    tokenized = tokenize_split(dataset, tokenizer, columns, None, data_args.max_seq_length)
    ids, scores = classify_texts(model, tokenizer, tokenized, data_args.top_k, training_args.per_device_eval_batch_size)
    names = model.config.id2label
    path = os.path.join(training_args.output_dir, PREDICTIONS_FILE)
    os.makedirs(training_args.output_dir, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        k = ids.shape[1]
        writer.writerow(["row", *columns, *(f"{kind}_{i + 1}" for i in range(k) for kind in ("label", "score"))])
        texts = [dataset[c] for c in columns]
        for row in range(len(dataset)):
            pairs = [v for i in range(k) for v in (names[int(ids[row, i])], f"{scores[row, i]:.6f}")]
            writer.writerow([row, *(t[row] for t in texts), *pairs])
    print(f"Predictions for {len(dataset)} texts of {data_args.predict_file}: {path}", flush=True)
    return path
