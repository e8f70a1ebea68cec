# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Text-classification data: local CSV / JSON / Parquet files (`--train_file`, `--validation_file`, named as in
transformers' `run_classification.py`) or a text preset of `--dataset`, with a text column or a pair of columns
(`--text_column_names`) and a label column (`--label_column_name`); label names to ids, the few-shot and
size-capped subsets of the image path, and tokenization with the model's tokenizer (truncation to
`--max_seq_length`; padding per batch by [`text_collator`]).

Every problem is a one-line [`DataError`]: an unsupported file type, a missing column (naming the columns found),
a label out of the model's range, an empty text.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar

from datasets import Dataset, DatasetDict, load_dataset

from .errors import DataError, one_line
from .prepare import PreparedData, draw_subsets, labelled_splits, with_example_index
from .presets import DataSource, get_preset, load_preset, resolved_revision
from .validation import own_validation_split

logger = logging.getLogger(__name__)

TEXT_FILE_TYPES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""The file extensions `--train_file` / `--validation_file` / `--predict_file` accept, and the `datasets` builder
that reads each."""

DEFAULT_TEXT_COLUMNS = ("sentence1", "sentence2")
"""The columns read when `--text_column_names` is not given and the data has no `text` / `sentence` column (as
`run_classification.py`: `sentence1` alone, or with `sentence2` as a pair)."""


@dataclass
class TextData(PreparedData):
    """[`PreparedData`] of text: `image_column` is empty and `text_columns` names the text column(s).

    Attributes:
        text_columns (`tuple[str, ...]`): one column, or two tokenized as a pair.
        tokenized (`bool`): whether [`tokenize_data`] has replaced the text by token ids.
    """

    text_columns: tuple[str, ...] = ()
    tokenized: bool = False
    modality: ClassVar[str] = "text"
    items: ClassVar[str] = "texts"


def parse_text_columns(text_column_names: str | None) -> tuple[str, ...] | None:
    """`"question,context"` as `("question", "context")`; one or two names, else a [`DataError`]."""
    if text_column_names is None:
        return None
    names = tuple(n.strip() for n in text_column_names.split(",") if n.strip())
    if not 1 <= len(names) <= 2:
        raise DataError(
            f"--text_column_names takes one column or a pair separated by a comma (e.g. 'text' or 'premise,"
            f"hypothesis'), got '{text_column_names}'."
        )
    return names


def text_file_builder(path: str, flag: str) -> str:
    """The `datasets` builder of `path` ([`TEXT_FILE_TYPES`]), or a [`DataError`]: missing file, unsupported type."""
    if not os.path.isfile(path):
        raise DataError(f"{flag} '{path}' does not exist or is not a file.")
    extension = os.path.splitext(path)[1].lower()
    if extension not in TEXT_FILE_TYPES:
        raise DataError(
            f"{flag} '{path}' is a '{extension or 'extension-less'}' file; supported: "
            f"{', '.join(sorted(TEXT_FILE_TYPES))} (CSV, JSON lines or Parquet)."
        )
    return TEXT_FILE_TYPES[extension]


def read_text_file(path: str, flag: str, cache_dir: str | None = None) -> Dataset:
    """One CSV / TSV / JSON / Parquet file as a `Dataset` (a TSV is read with tab separators)."""
    builder = text_file_builder(path, flag)
    kwargs = {"delimiter": "\t"} if path.lower().endswith(".tsv") else {}
    try:
        return load_dataset(builder, data_files={"data": path}, split="data", cache_dir=cache_dir, **kwargs)
    except Exception as error:  # a malformed file: one line, not the builder's traceback
        raise DataError(f"Cannot read {flag} '{path}' as {builder}: {one_line(error)}") from error


def load_text_files(train_file: str, validation_file: str | None = None, cache_dir: str | None = None) -> DatasetDict:
    """`--train_file` (and `--validation_file`) as a `DatasetDict` with `"train"` (and `"validation"`)."""
    splits = {"train": read_text_file(train_file, "--train_file", cache_dir)}
    if validation_file is not None:
        splits["validation"] = read_text_file(validation_file, "--validation_file", cache_dir)
    return DatasetDict(splits)


def default_text_columns(columns: list[str]) -> tuple[str, ...]:
    """What to read when `--text_column_names` is not given: `text`, `sentence`, else `sentence1` (and
    `sentence2` if present), as `run_classification.py` does."""
    for name in ("text", "sentence"):
        if name in columns:
            return (name,)
    return tuple(n for n in DEFAULT_TEXT_COLUMNS if n in columns) or ("text",)


def check_text_columns(dataset: Dataset, text_columns: tuple[str, ...], label_column: str | None, where: str) -> None:
    """Raise a [`DataError`] naming the columns found unless every text column (and `label_column`) exists."""
    missing = [c for c in (*text_columns, label_column) if c is not None and c not in dataset.column_names]
    if missing:
        raise DataError(
            f"The {where} data has no column {', '.join(repr(m) for m in missing)}; found columns "
            f"{dataset.column_names}. Pass --text_column_names / --label_column_name to name the right ones."
        )


def check_texts(dataset: Dataset, text_columns: tuple[str, ...], where: str) -> None:
    """Raise a [`DataError`] naming the first example whose text (in any of `text_columns`) is missing or blank: it
    would be trained on as the special tokens alone."""
    for column in text_columns:
        values = dataset[column]
        empty = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if empty:
            shown = values[empty[0]]
            raise DataError(
                f"The {where} data has {len(empty)} empty text(s) in column '{column}' (first: example {empty[0]}, "
                f"{shown!r}); remove those rows or fill them in."
            )


def load_text_splits(
    dataset: str | None, train_file: str | None, validation_file: str | None, cache_dir, token, own_validation: bool
) -> tuple[DatasetDict, DataSource, object]:
    """The splits of a text preset or of local files, their [`DataSource`], and the preset (`None` for files)."""
    if (dataset is None) == (train_file is None):
        raise DataError(
            "Pass exactly one of --dataset NAME (a text preset) or --train_file FILE (CSV, JSON or Parquet)."
        )
    if dataset is not None:
        preset = get_preset(dataset)
        if not preset.is_text:
            raise DataError(
                f"--dataset {preset.name} is an image dataset: a text model needs a text preset or --train_file."
            )
        splits = load_preset(preset, cache_dir=cache_dir, token=token, own_validation=own_validation)
        source = preset.source()
        source.revision = resolved_revision(splits["train"], preset.revision)
        return splits, source, preset
    splits = load_text_files(train_file, validation_file, cache_dir)
    source = DataSource(name=os.path.basename(train_file), local=True, official_split=False,
                        eval_split="validation" if validation_file else "train",
                        eval_split_role="a separate file" if validation_file else "")  # fmt: skip
    return splits, source, None


def prepare_text_datasets(
    dataset: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    text_column_names: str | None = None,
    label_column_name: str | None = None,
    num_labels: int | None = None,
    train_val_split: float = 0.15,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    train_samples_per_class: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    own_validation: bool = False,
) -> TextData:
    """Load a text preset (`dataset`) or local files (`train_file`, `validation_file`), check columns, texts and
    labels, and draw the requested subsets, as [`prepare_datasets`] does for images. Every problem is a one-line
    [`DataError`].

    Args:
        dataset: name of a text preset in [`DATASET_PRESETS`] (one with `text_columns`).
        train_file, validation_file: CSV / TSV / JSON lines / Parquet files (instead of `dataset`); without
            `validation_file`, `train_val_split` of the training file is held out for evaluation (seeded).
        text_column_names: one column, or two separated by a comma (a pair); default: the preset's, else `text`,
            `sentence` or `sentence1[,sentence2]`.
        label_column_name: the label column (default: the preset's, else `label`); string labels become classes
            sorted by name, integer labels are class ids.
        num_labels: classes of the model's new head (default: the number of classes of the data).
        max_train_samples, max_eval_samples, train_samples_per_class, seed: the subsets of the image path.
        cache_dir, token: passed to `datasets.load_dataset`.
        own_validation: make the preset's own validation split `validation` (see [`prepare_datasets`]).

    Returns:
        [`TextData`]: the splits, not yet tokenized ([`tokenize_data`]).
    """
    splits, source, preset = load_text_splits(dataset, train_file, validation_file, cache_dir, token, own_validation)
    label_column = label_column_name or (preset.label_column if preset else "label")
    text_columns = parse_text_columns(text_column_names) or (
        preset.text_columns if preset else default_text_columns(splits["train"].column_names)
    )
    for name, split in splits.items():
        check_text_columns(split, text_columns, label_column, name)
        check_texts(split, text_columns, name)
    splits, label_names, num_labels, own = labelled_splits(
        splits, label_column, preset, num_labels, source, train_val_split, seed,
        subset=train_samples_per_class is not None or max_train_samples is not None,
    )  # fmt: skip
    train, evaluation = draw_subsets(
        splits, label_column, label_names, source, seed, train_samples_per_class, max_train_samples, max_eval_samples
    )
    source.eval_examples = len(evaluation)
    if len(train) == 0 or len(evaluation) == 0:
        raise DataError(f"Nothing left to train or evaluate on ({len(train)} train, {len(evaluation)} eval examples).")
    names = label_names[:num_labels] + [str(i) for i in range(len(label_names), num_labels)]
    description = (preset.hub_id or f"{preset.name} (built in)") if preset else train_file
    data = TextData(train, evaluation, names, "", label_column, description, source=source, text_columns=text_columns)
    if own is not None:
        data.validation = with_example_index(own)
        data.validation_split = own_validation_split(data.validation, train, label_column, preset.validation_split)
    return data


def tokenize_split(
    dataset: Dataset, tokenizer, text_columns: tuple[str, ...], label_column: str | None, max_seq_length: int
) -> Dataset:
    """`dataset` as model inputs: the tokenizer's `input_ids` (and `attention_mask`, `token_type_ids`) of the text
    (or pair), truncated to `max_seq_length` tokens and not padded, with `labels` from `label_column` (`None`: no
    labels, to predict); every other column is dropped."""

    def encode(batch: dict) -> dict:
        texts = [batch[c] for c in text_columns]
        encoded = tokenizer(*texts, truncation=True, max_length=max_seq_length)
        if label_column is not None:
            encoded["labels"] = batch[label_column]
        return dict(encoded)

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")


def tokenize_data(data: TextData, tokenizer, max_seq_length: int = 128) -> None:
    """Replace the text of every split of `data` by token ids ([`tokenize_split`]), in place; the labels are then
    `labels`. `max_seq_length` is capped by the tokenizer's `model_max_length`."""
    if max_seq_length < 1:
        raise DataError(f"--max_seq_length must be >= 1, got {max_seq_length}.")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < max_seq_length:
        logger.warning(f"--max_seq_length {max_seq_length} is above the tokenizer's limit: truncating to {limit}.")
        max_seq_length = limit
    for name in ("train", "eval", "validation", "search_train"):
        split = getattr(data, name)
        if split is not None:
            setattr(data, name, tokenize_split(split, tokenizer, data.text_columns, data.label_column, max_seq_length))
    data.label_column, data.tokenized = "labels", True


def text_collator(tokenizer, pad_to_multiple_of: int | None = None):
    """Pads each batch to its longest sequence (`DataCollatorWithPadding`)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
