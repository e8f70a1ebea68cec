"""Text-classification data (`smile_hf.data.text`): local files, text presets, label encoding, the one-line errors,
tokenization with truncation and per-batch padding. Offline, on the bundled tiny BERT's tokenizer."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from smile_hf.data import (
    DATASET_PRESETS,
    TEXT_PRESETS,
    DataError,
    get_preset,
    load_preset,
    prepare_text_datasets,
    text_collator,
    tokenize_data,
)
from smile_hf.run.arguments import resolve_bundled

TOKENIZER = resolve_bundled("checkpoints/debian-bert-tiny")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def rows(names=("spam", "ham", "eggs"), per_class=4):
    return [(f"message number {i} about {name}", name) for name in names for i in range(per_class)]


def test_csv_string_labels_become_sorted_class_ids(tmp_path):
    train = write_csv(tmp_path / "train.csv", rows())
    validation = write_csv(tmp_path / "val.csv", rows(per_class=2))
    data = prepare_text_datasets(train_file=train, validation_file=validation)
    assert data.label_names == ["eggs", "ham", "spam"]  # sorted by name
    texts, labels = data.train["text"], data.train["label"]
    assert all(data.label_names[label] in text for text, label in zip(texts, labels))
    assert data.text_columns == ("text",) and len(data.eval) == 6 and data.source.local


def test_few_shot_subset_of_a_file_and_held_out_evaluation(tmp_path):
    train = write_csv(tmp_path / "train.csv", rows(per_class=10))
    data = prepare_text_datasets(train_file=train, train_samples_per_class=3, train_val_split=0.2, seed=1)
    assert np.bincount(data.train["label"]).tolist() == [3, 3, 3]
    assert len(data.eval) == 6  # 20 % of 30, stratified
    assert not set(data.train["text"]) & set(data.eval["text"])


def test_pair_of_columns_tokenized_as_a_pair(tmp_path, tokenizer):
    path = tmp_path / "train.jsonl"
    examples = [{"premise": f"a game number {i}", "hypothesis": "it is fun", "label": i % 2} for i in range(8)]
    path.write_text("\n".join(json.dumps(e) for e in examples))
    data = prepare_text_datasets(
        train_file=str(path), validation_file=str(path), text_column_names="premise, hypothesis"
    )
    assert data.text_columns == ("premise", "hypothesis") and data.label_names == ["0", "1"]
    tokenize_data(data, tokenizer, max_seq_length=32)
    expected = tokenizer(examples[0]["premise"], examples[0]["hypothesis"])["input_ids"]
    assert data.eval[0]["input_ids"] == expected
    assert 1 in data.eval[0]["token_type_ids"]  # the second segment is marked
    assert set(data.train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}


def test_truncation_and_padding_per_batch(tmp_path, tokenizer):
    long_text = " ".join(["graphics"] * 100)
    train = write_csv(tmp_path / "train.csv", [("short one", "a"), (long_text, "b"), ("a middle text here", "a")])
    data = prepare_text_datasets(train_file=train, validation_file=train)
    tokenize_data(data, tokenizer, max_seq_length=16)
    lengths = [len(ids) for ids in data.eval["input_ids"]]
    assert lengths[1] == 16  # truncated, [SEP] kept last
    assert data.eval[1]["input_ids"][-1] == tokenizer.sep_token_id
    batch = text_collator(tokenizer)([data.eval[0], data.eval[2]])
    longest = max(lengths[0], lengths[2])
    assert batch["input_ids"].shape == (2, longest)  # padded to the batch's longest, not to 16
    assert batch["attention_mask"].sum(1).tolist() == [lengths[0], lengths[2]]
    assert batch["labels"].tolist() == [0, 0]


def test_missing_column_names_the_columns_found(tmp_path):
    train = write_csv(tmp_path / "train.csv", rows(), header=("body", "label"))
    with pytest.raises(DataError, match=r"no column 'text'; found columns \['body', 'label'\].*--text_column_names"):
        prepare_text_datasets(train_file=train)
    with pytest.raises(DataError, match=r"no column 'category'.*--label_column_name"):
        prepare_text_datasets(train_file=train, text_column_names="body", label_column_name="category")


def test_labels_out_of_range(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"text {i}", i % 3) for i in range(9)])
    with pytest.raises(DataError, match=r"outside the model's range 0\.\.1 \(first: label 2 at example"):
        prepare_text_datasets(train_file=train, validation_file=train, num_labels=2)


def test_empty_text(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("fine", "a"), ("   ", "b"), ("also fine", "a")])
    with pytest.raises(DataError, match=r"1 empty text\(s\) in column 'text' \(first: example 1"):
        prepare_text_datasets(train_file=train)


def test_unsupported_or_missing_file(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"'\.xlsx' file; supported: \.csv, \.json, \.jsonl, \.parquet, \.tsv"):
        prepare_text_datasets(train_file=str(path))
    with pytest.raises(DataError, match="does not exist"):
        prepare_text_datasets(train_file=str(tmp_path / "nothing.csv"))


def test_text_presets_declare_text_columns_and_an_image_preset_is_refused():
    assert {p.name for p in TEXT_PRESETS} == {"sst2", "imdb", "ag_news", "emotion", "banking77", "trec",
                                              "debian_sections"}  # fmt: skip
    for preset in TEXT_PRESETS:
        assert DATASET_PRESETS[preset.name] is preset and preset.is_text and preset.num_labels >= 2
    assert not get_preset("digits").is_text
    with pytest.raises(DataError, match="image dataset"):
        prepare_text_datasets(dataset="digits")


def test_hub_text_preset_offline_is_one_line_error():
    with pytest.raises(DataError, match=r"Cannot load split 'train' of dataset 'stanfordnlp/sst2' \(--dataset sst2\)"):
        load_preset(get_preset("sst2"))


def test_offline_preset_few_shot(tokenizer):
    data = prepare_text_datasets(dataset="debian_sections", train_samples_per_class=2, seed=3)
    assert data.label_names == ["database", "games", "graphics", "mail", "math", "sound"]
    assert np.bincount(data.train["section"]).tolist() == [2] * 6 and len(data.eval) == 300
    other = prepare_text_datasets(dataset="debian_sections", train_samples_per_class=2, seed=4)
    assert data.train["package"] != other.train["package"]  # the seed draws the shots


@pytest.mark.parametrize("name", sorted(p.name for p in TEXT_PRESETS if p.hub_id is not None))
def test_hub_text_preset_loads_its_declared_schema(name, tmp_path, monkeypatch):
    """A local Parquet copy of the schema each Hub text preset declares (splits, text and label columns, classes)
    loads through the preset (the configuration name is left out: a folder has none)."""
    from datasets import ClassLabel, Dataset, Features, Value

    preset = DATASET_PRESETS[name]
    features = Features({**{c: Value("string") for c in preset.text_columns},
                         preset.label_column: ClassLabel(num_classes=preset.num_labels)})  # fmt: skip
    folder = tmp_path / "repo" / (preset.data_dir or "data")
    folder.mkdir(parents=True)
    labels = [0, 1, preset.num_labels - 1]
    for split in preset.split_names():
        rows = {**{c: [f"{split} text {i}" for i in range(3)] for c in preset.text_columns}, preset.label_column: labels}
        Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    local = dataclasses.replace(preset, hub_id=str(tmp_path / "repo"), revision=None, config_name=None)
    monkeypatch.setitem(DATASET_PRESETS, name, local)
    data = prepare_text_datasets(dataset=name, cache_dir=str(tmp_path / "cache"))
    assert len(data.label_names) == preset.num_labels and data.text_columns == preset.text_columns
    assert len(data.train) == 3 and sorted(data.eval[preset.label_column]) == labels
    assert data.eval[preset.text_columns[0]][0].startswith(preset.eval_split)
