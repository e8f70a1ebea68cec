"""Each Hub preset loads a dataset with the schema it declares (splits, image and label columns, number of classes):
a small local Parquet copy of that schema, written here, stands in for the Hub repository (offline). A drifted
schema (a missing column or split, another class count) is one clear `DataError`, not a traceback from deep inside
`datasets`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image

from smile_hf.data import DATASET_PRESETS, DataError, DatasetPreset, prepare_datasets

HUB_PRESETS = sorted(name for name, p in DATASET_PRESETS.items() if p.hub_id is not None and not p.is_text)
"""The image presets of the Hub (the text ones: `tests/test_text_data.py`)."""
ROWS_PER_SPLIT = 3
EXTRA_COLUMNS = {
    "cub200": {"bbox": (Sequence(Value("float32"), length=4), [0.0, 0.0, 1.0, 1.0])},
    "fgvc_aircraft": {"family": (ClassLabel(num_classes=70), 69), "bbox": (Sequence(Value("int64"), length=4), [0, 0, 1, 1])},
}  # fmt: skip
"""Columns beside the image and the label on the presets' Hub cards (feature, value of every row), so that the local
copy has them too: bentrevett/caltech-ucsd-birds-200-2011's `bbox`; FGVC-Aircraft's `bbox` and 70-class `family`,
which must not be taken for the 100 variants."""


def write_local_copy(
    root: Path, preset: DatasetPreset, num_labels: int | None = None, drop_split: str | None = None,
    drop_column: str | None = None,
) -> Path:  # fmt: skip
    """Write `root/<data_dir>/<split>-00000-of-00001.parquet` for every split of `preset` (but `drop_split`): its
    image column (8 x 8 PNGs), a `ClassLabel` label column with `num_labels` (default: the preset's) classes,
    labels 0, 1 and the last (but `drop_column`), and the preset's [`EXTRA_COLUMNS`]. Return `root`, to load as the
    repository."""
    num_labels = num_labels or preset.num_labels
    extra = EXTRA_COLUMNS.get(preset.name, {})
    features = Features({
        preset.image_column: ImageFeature(), preset.label_column: ClassLabel(num_classes=num_labels),
        **{name: feature for name, (feature, _) in extra.items()},
    })  # fmt: skip
    folder = root / (preset.data_dir or "data")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in sorted(preset.split_names() - {drop_split}):
        images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(ROWS_PER_SPLIT)]
        rows = {preset.image_column: images, preset.label_column: [0, 1, num_labels - 1]}
        rows.update({name: [value] * ROWS_PER_SPLIT for name, (_, value) in extra.items()})
        dataset = Dataset.from_dict(rows, features=features)
        if drop_column:
            dataset = dataset.remove_columns(drop_column)
        dataset.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return root


def use_local_copy(monkeypatch, name: str, root: Path) -> None:
    """Point the preset at the local folder (no revision: a folder has none)."""
    monkeypatch.setitem(DATASET_PRESETS, name, dataclasses.replace(DATASET_PRESETS[name], hub_id=str(root), revision=None))


@pytest.mark.parametrize("name", HUB_PRESETS)
def test_hub_preset_loads_its_declared_schema(name, tmp_path, monkeypatch):
    preset = DATASET_PRESETS[name]
    use_local_copy(monkeypatch, name, write_local_copy(tmp_path / "repo", preset))
    data = prepare_datasets(dataset=name, cache_dir=str(tmp_path / "cache"))
    assert len(data.label_names) == preset.num_labels
    assert (data.image_column, data.label_column) == (preset.image_column, preset.label_column)
    assert len(data.train) == ROWS_PER_SPLIT * len(preset.train_split.split("+"))  # "train+validation": both
    assert len(data.eval) == ROWS_PER_SPLIT
    assert sorted(data.eval.with_format(None)[preset.label_column]) == [0, 1, preset.num_labels - 1]
    source = data.source
    assert (source.train_split, source.eval_split, source.official_split) == (
        preset.train_split, preset.eval_split, preset.official_split,
    )  # fmt: skip


DRIFTS = {
    "a missing label column": (dict(drop_column="label"), r"The train split has no column 'label'; found columns"),
    "another class count": (dict(num_labels=99), r"column 'fine_label' of .* has 99 classes, the preset declares 100"),
    "a missing split": (dict(drop_split="test"), r"Cannot load split 'test' of dataset .* \(--dataset cifar100\)"),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_a_drifted_schema_is_one_clear_data_error(drift, tmp_path, monkeypatch):
    kwargs, message = DRIFTS[drift]
    preset = DATASET_PRESETS["cifar100"]
    if "drop_column" in kwargs:
        kwargs = {"drop_column": preset.label_column}
        message = message.replace("'label'", f"'{preset.label_column}'")
    use_local_copy(monkeypatch, "cifar100", write_local_copy(tmp_path / "repo", preset, **kwargs))
    with pytest.raises(DataError, match=message) as raised:
        prepare_datasets(dataset="cifar100", cache_dir=str(tmp_path / "cache"))
    assert "\n" not in str(raised.value)


def test_another_label_column_than_the_presets_only_warns(tmp_path, monkeypatch, caplog):
    """`--label_column` picks another column on purpose: its class count is not the preset's to check."""
    preset = dataclasses.replace(DATASET_PRESETS["cifar100"], label_column="coarse_label")
    root = write_local_copy(tmp_path / "repo", preset, num_labels=20)
    use_local_copy(monkeypatch, "cifar100", root)
    data = prepare_datasets(dataset="cifar100", label_column="coarse_label", cache_dir=str(tmp_path / "cache"))
    assert len(data.label_names) == 20 and "has 20 classes, the preset declares 100" in caplog.text
