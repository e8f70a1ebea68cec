"""`--validation_source`: a preset with its own validation split (like fgvc_aircraft's and flowers102's `train` /
`validation` / `test`) validates a search and calibration on that split, the trials train on the training data
without it and the final run on all of it; carving stays for presets without one, for training subsets, and when
asked. The preset here is digits cut in three by a local builder (no Hub), each image named by a `uid` column."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from datasets import DatasetDict

from smile_hf.data import DATASET_PRESETS, DataError, build_digits, load_preset, prepare_datasets
from smile_hf.run import InputError, main, parse_args, prepare_data
from smile_hf.run import hp_search as hp_search_module
from smile_hf.run.validation_source import check_validation_source, validation_source

from .test_preset_schemas import ROWS_PER_SPLIT, use_local_copy, write_local_copy

NAME = "digits_trainval"


def build_three_splits(preset) -> DatasetDict:
    """digits' fixed train / test halves, with a stratified fifth of train (seed 0) as the `validation` split."""
    base = build_digits(DATASET_PRESETS["digits"])
    train = base["train"].add_column("uid", list(range(len(base["train"]))))
    test = base["test"].add_column("uid", [10_000 + i for i in range(len(base["test"]))])
    parts = train.train_test_split(test_size=0.2, stratify_by_column="label", seed=0)
    return DatasetDict(train=parts["train"], validation=parts["test"], test=test)


@pytest.fixture
def trainval(monkeypatch):
    """A preset trained on `train+validation`, evaluated on `test`, with `validation` its own validation split;
    returns the builder's splits' uids."""
    preset = dataclasses.replace(
        DATASET_PRESETS["digits"], name=NAME, train_split="train+validation", eval_split="test",
        validation_split="validation", builder=build_three_splits,
    )  # fmt: skip
    monkeypatch.setitem(DATASET_PRESETS, NAME, preset)
    splits = build_three_splits(preset)
    return {name: list(split["uid"]) for name, split in splits.items()}


def uids(dataset) -> list[int]:
    return list(dataset.with_format(None)["uid"])


def data_for(argv: list[str], calibration: bool = False):
    model_args, data_args, _ = parse_args([*argv, "--report_to", "none"])
    return prepare_data(data_args, model_args, 0, None, validation=True, calibration=calibration), data_args


def test_the_presets_own_split_validates_and_the_final_run_trains_on_everything(trainval):
    plain = prepare_datasets(dataset=NAME)  # a run without a validation split: trains on train + validation
    data, data_args = data_for(["--dataset", NAME])
    assert validation_source(data_args) == "dataset"
    assert uids(data.search_train) == trainval["train"]  # the trials: train only, in order
    assert uids(data.validation) == trainval["validation"]  # scored on the dataset's own validation split
    assert uids(data.train) == trainval["train"] + trainval["validation"] == uids(plain.train)  # the final run
    assert uids(data.eval) == trainval["test"]
    split = data.validation_split
    assert (split.source, split.split_name, split.examples) == ("dataset", "validation", len(trainval["validation"]))
    assert (split.train_examples, split.final_train_examples) == (len(trainval["train"]), len(plain.train))
    assert (split.seed, split.fraction, split.samples_per_class) == (None, None, None)
    assert split.describe().startswith(f"the dataset's own `validation` split, {len(trainval['validation'])} images")
    # the trials get the training transform, the validation split the evaluation one (different pipelines)
    assert data.search_train[0]["pixel_values"].shape == data.validation[0]["pixel_values"].shape
    assert data.search_train._format_kwargs["transform"].transform.train
    assert not data.validation._format_kwargs["transform"].transform.train


def test_calibration_keeps_the_own_split_out_of_the_final_training(trainval):
    data, _ = data_for(["--dataset", NAME], calibration=True)
    assert data.search_train is None
    assert uids(data.train) == trainval["train"] and uids(data.validation) == trainval["validation"]
    assert data.validation_split.final_train_examples is None
    assert "training images without it" in data.validation_split.describe()
    assert data.validation_split.card_text().endswith("; the model never trained on them")


@pytest.mark.parametrize(
    "extra, held_out",
    [
        (["--validation_samples_per_class", "1"], 10),  # carving asked for: 1 per class of train + validation
        (["--validation_source", "carve"], None),  # default fraction 0.2 of every class
        (["--train_samples_per_class", "4"], 10),  # a few-shot subset: carved from it (0.2 * 4 rounds to 1)
    ],
)
def test_carving_when_asked_or_for_a_subset(trainval, extra, held_out):
    data, data_args = data_for(["--dataset", NAME, *extra])
    assert validation_source(data_args) == "carve" and data.search_train is None
    assert data.validation_split.source == "carved"
    assert "held out of the training data" in data.validation_split.describe()
    everything = set(trainval["train"] + trainval["validation"])
    assert set(uids(data.validation)) < everything and set(uids(data.train)).isdisjoint(uids(data.validation))
    if held_out is not None:
        assert len(data.validation) == held_out


def test_a_preset_without_its_own_split_is_carved():
    assert DATASET_PRESETS["digits"].validation_split is None
    data, data_args = data_for(["--dataset", "digits", "--train_samples_per_class", "3"])
    assert validation_source(data_args) == "carve" and data.validation_split.source == "carved"


def test_which_presets_have_their_own_split():
    """Only presets whose training data joins a validation split that is not their evaluation split."""
    owning = {name for name, preset in DATASET_PRESETS.items() if preset.validation_split is not None}
    assert owning == {"fgvc_aircraft", "flowers102"}
    for name in owning:
        preset = DATASET_PRESETS[name]
        assert preset.validation_split in preset.train_parts() and preset.validation_split != preset.eval_split
        assert preset.train_parts(without_validation=True) == ["train"]


OWN = ["--validation_source", "dataset"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "digits", *OWN], r"digits has no validation split of its own .*fgvc_aircraft, flowers102"),
        (["--train_dir", "x", *OWN], "image folders has no validation split of its own"),
        (["--dataset", NAME, *OWN, "--validation_split_fraction", "0.1"], "--validation_split_fraction carve"),
        (["--dataset", NAME, *OWN, "--max_train_samples", "50"], "drop it, or use --validation_source carve"),
    ],
)
def test_an_unusable_validation_source_is_one_line(trainval, argv, message):
    _, data_args, _ = parse_args([*argv, "--report_to", "none"])
    with pytest.raises(InputError, match=message) as raised:
        check_validation_source(data_args)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", ["fgvc_aircraft", "flowers102"])
def test_a_hub_presets_own_split_is_read_from_the_repository(name, tmp_path, monkeypatch):
    """The Hub path (`load_dataset` by split name) on a local Parquet copy of the preset's declared schema: the
    trials' data is the `train` split, the validation split is `validation`, the final run trains on both."""
    preset = DATASET_PRESETS[name]
    use_local_copy(monkeypatch, name, write_local_copy(tmp_path / "repo", preset))
    plain = prepare_datasets(dataset=name, cache_dir=str(tmp_path / "cache"))
    data = prepare_datasets(dataset=name, cache_dir=str(tmp_path / "cache"), own_validation=True)
    raw = lambda dataset: [row[preset.image_column]["bytes"] for row in dataset.with_format(None)]  # noqa: E731
    assert (len(data.search_train), len(data.validation)) == (ROWS_PER_SPLIT, ROWS_PER_SPLIT)
    assert raw(data.train) == raw(plain.train) == raw(data.search_train) + raw(data.validation)
    assert data.validation_split.describe().startswith(f"the dataset's own `validation` split, {ROWS_PER_SPLIT} images")


def test_a_validation_source_without_a_search_or_calibration_is_refused(tmp_path):
    with pytest.raises(InputError, match="--validation_source carve chooses the validation split of --hp_search_trials"):
        main(["--dataset", "digits", "--validation_source", "carve", "--report_to", "none", "--output_dir", str(tmp_path)])


def test_loading_the_own_split_of_a_preset_without_one_is_refused():
    with pytest.raises(DataError, match="has no validation split of its own"):
        load_preset(DATASET_PRESETS["digits"], own_validation=True)


def test_a_search_trains_on_train_validates_on_the_own_split_and_retrains_on_both(trainval, tmp_path, monkeypatch):
    pytest.importorskip("optuna", reason="the hyperparameter search needs the optional `optuna` (smile_hf[tune])")
    real, seen = hp_search_module.validation_trainer, []

    def validation_trainer(model, args, data, **kwargs):
        trainer = real(model, args, data, **kwargs)
        seen.append((uids(trainer.train_dataset), uids(trainer.eval_dataset)))
        return trainer

    monkeypatch.setattr(hp_search_module, "validation_trainer", validation_trainer)
    output_dir = tmp_path / "run"
    result = main([
        "--dataset", NAME, "--max_eval_samples", "30", "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "64", "--method", "finetune", "--hp_search_trials", "2", "--report_to", "none",
        "--disable_tqdm", "True", "--output_dir", str(output_dir),
    ])  # fmt: skip
    assert seen == [(trainval["train"], trainval["validation"])] * 2  # every trial
    assert result["num_train"] == len(trainval["train"]) + len(trainval["validation"])  # the final run: both
    record = json.load(open(os.path.join(output_dir, "hp_search.json"), encoding="utf-8"))
    split = record["validation_split"]
    assert (split["source"], split["split_name"]) == ("dataset", "validation")
    assert split["examples"] == len(trainval["validation"])
    assert result["validation_split"] == split
    card = open(os.path.join(output_dir, "README.md"), encoding="utf-8").read()
    assert f"the dataset's own `validation` split, {len(trainval['validation'])} images" in card
    assert "the search's trials never trained on them, the final model did." in card


@pytest.mark.parametrize(
    "extra, defines",
    [([], False), (["--validation_split_fraction", "0.3"], False), (["--calibration", "temperature"], True),
     (["--hp_search_trials", "2"], True)],
)  # fmt: skip
def test_the_validation_source_defines_a_run_only_with_a_search_or_a_calibration(tmp_path, extra, defines):
    """Only a search or a calibration holds a validation split out, so only then does the source change the trained
    weights (and a run folder saved before the option existed still resumes without one)."""
    from smile_hf.run.driver import run_config

    model_args, data_args, training_args = parse_args(["--dataset", "digits", "--output_dir", str(tmp_path), *extra])
    assert ("validation_source" in run_config(model_args, data_args, training_args)["data"]) is defines
