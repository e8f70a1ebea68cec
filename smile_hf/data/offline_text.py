# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The offline text dataset of `--dataset debian_sections`: Debian package descriptions labelled by archive section,
read from the snapshot `data/debian-descriptions` shipped in the repository (see its README)."""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict, load_dataset

from .errors import DataError
from .labels import encode_labels

DEBIAN_DESCRIPTIONS_DIR = Path(__file__).resolve().parents[2] / "data" / "debian-descriptions"
"""The snapshot's folder: `source_{train,validation}.csv` (12 sections) and `target_{train,test}.csv` (6 others)."""


def debian_descriptions_file(name: str) -> str:
    """The path of `name` in the snapshot, or a [`DataError`] saying where it is expected."""
    path = DEBIAN_DESCRIPTIONS_DIR / name
    if not path.is_file():
        raise DataError(
            f"{path} not found: the Debian descriptions ship in the repository's data/ folder, not in the package; "
            "run from a clone of the repository, or pass the CSV files with --train_file / --validation_file."
        )
    return str(path)


def build_debian_sections(preset) -> DatasetDict:
    """The target task of the snapshot (6 sections) as a `DatasetDict` with `preset.train_split` (30 descriptions per
    section) and `preset.eval_split` (50 per section), the label a `ClassLabel` of the sections sorted by name."""
    files = {preset.train_split: debian_descriptions_file("target_train.csv"),
             preset.eval_split: debian_descriptions_file("target_test.csv")}  # fmt: skip
    splits = load_dataset("csv", data_files=files)
    return encode_labels(splits, preset.label_column)[0]  # encode_labels reads "train": the preset's train_split
