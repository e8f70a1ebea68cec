"""Model cards written by the run script after every run: Hub-clean (no local path, valid metric ids, license,
dataset id / revision / split named truthfully) and parsed back offline by huggingface_hub's own code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from smile_hf import SmileTrainingArguments
from smile_hf import run as run_smile
from smile_hf.data import DATASET_PRESETS
from smile_hf.model_card import HUB_METRIC_IDS, TrainingResults, build_model_card

from .testing_utils import script_device_args

EVAL = {"eval_accuracy": 0.5, "eval_top5_accuracy": 0.75, "eval_ece": 0.125, "eval_num_samples": 8, "eval_loss": 1.5}


def image_folder(root: Path, classes=("ant", "bee"), per_class=6, size=20, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def parse(card_path: Path):
    """The card as the Hub reads it: YAML metadata, then `model-index` into `EvalResult`s."""
    card = ModelCard.load(card_path)
    data = card.data.to_dict()
    model_name, results = model_index_to_eval_results(data["model-index"])
    return card, data, model_name, results


def test_run_writes_a_hub_clean_card_for_local_data(tmp_path):
    """A run on an image folder given by absolute path, not pushed: README.md is written beside the model, names
    the data by folder name only, lists only valid metric ids, takes the base model's license, and its results are
    those of results.json."""
    train_dir = image_folder(tmp_path / "secret_place" / "my_bugs")
    out = tmp_path / "out"
    run_smile.main([
        "--train_dir", str(train_dir), "--model_name_or_path", run_smile.resolve_bundled(run_smile.BUNDLED_CHECKPOINT),
        "--method", "finetune", "--max_steps", "2", "--per_device_train_batch_size", "4", "--train_val_split", "0.34",
        "--report_to", "none", "--disable_tqdm", "True", "--output_dir", str(out), *script_device_args(),
    ])  # fmt: skip
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    text = (out / "README.md").read_text()
    assert str(tmp_path) not in text and "secret_place" not in text
    card, data, model_name, results = parse(out / "README.md")
    assert model_name == "out" and data["license"] == "apache-2.0"  # the bundled checkpoint's card says apache-2.0
    assert "datasets" not in data and "base_model" not in data  # a local folder is no Hub id
    assert set(data["metrics"]) <= HUB_METRIC_IDS and data["metrics"] == ["accuracy"]
    saved = json.loads((out / "results.json").read_text())["runs"][0]["metrics"]
    expected = {"accuracy": saved["eval_accuracy"], "top_5_accuracy": saved["eval_top5_accuracy"],
                "ece": saved["eval_ece"]}  # fmt: skip
    assert {r.metric_type: r.metric_value for r in results} == pytest.approx(expected, abs=0)
    for result in results:
        assert (result.dataset_type, result.dataset_name, result.dataset_split) == (
            "imagefolder", "my_bugs (local image folder)", "train",
        )  # fmt: skip
    assert "34% held out of the training data" in text and "not the official split" in text


def test_preset_card_names_the_dataset_revision_and_true_split(tmp_path):
    """Food-101: Hub id, readable name, revision in metadata; its `validation` split is called the official test
    split in the text."""
    source = DATASET_PRESETS["food101"].source()
    source.revision = "0123456789abcdef0123456789abcdef01234567"
    card_args = run_smile.card_arguments(
        run_smile.ModelArguments(model_name_or_path="microsoft/resnet-50", license="mit"),
        SmileTrainingArguments(output_dir=str(tmp_path), method="smile"),
        type("Data", (), {"source": source})(), from_scratch=False,
    )  # fmt: skip
    from smile_hf.model_card import training_results

    card = build_model_card(
        model_name="food101-smile-resnet-50", method="smile", results=training_results([{**EVAL, "step": 9}]),
        base_model=card_args["finetuned_from"], dataset_id=card_args["dataset_tags"], license=card_args["license"],
        dataset_name=card_args["dataset"], dataset_split=card_args["dataset_split"],
        dataset_revision=card_args["dataset_revision"], dataset_split_role=card_args["dataset_split_role"],
    )  # fmt: skip
    card.save(tmp_path / "README.md")
    _, data, _, results = parse(tmp_path / "README.md")
    assert data["datasets"] == ["ethz/food101"] and data["base_model"] == "microsoft/resnet-50"
    assert data["license"] == "mit" and data["metrics"] == ["accuracy"]
    assert {r.metric_type for r in results} == {"accuracy", "top_5_accuracy", "ece"}  # no loss, no num_samples
    assert {r.metric_name for r in results} == {"Top-1 accuracy", "Top-5 accuracy", "Expected calibration error"}
    assert {(r.dataset_type, r.dataset_name, r.dataset_split, r.dataset_revision) for r in results} == {
        ("ethz/food101", "Food-101", "validation", source.revision)
    }
    assert "the official test split (250 images per class), named 'validation' on the Hub" in card.text


def test_local_paths_never_reach_a_card(tmp_path):
    """Whatever the caller passes: an absolute dataset path becomes its folder name, marked local."""
    card = build_model_card(
        model_name="m", method="finetune", results=TrainingResults(eval_metrics={"accuracy": 0.5}),
        dataset_id=str(tmp_path / "data" / "birds"), dataset_name=str(tmp_path / "data" / "birds"),
        base_model=str(tmp_path),
    )  # fmt: skip
    assert str(tmp_path) not in str(card)
    assert card.data.datasets is None and card.data.eval_results[0].dataset_name == "birds (local image folder)"


def test_built_in_data_card_has_no_hub_id_and_states_the_sample_counts(tmp_path):
    """--dataset digits (scikit-learn's, on no Hub repository), few-shot, evaluated on part of its test split: no
    `datasets:` entry, no huggingface.co/datasets link, and the text says how many images were used."""
    out = tmp_path / "digits"
    run_smile.main([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "50", "--method", "finetune",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "True",
        "--output_dir", str(out), *script_device_args(),
    ])  # fmt: skip
    text = (out / "README.md").read_text()
    card, data, _, results = parse(out / "README.md")
    assert "datasets" not in data and "huggingface.co/datasets" not in text
    saved = json.loads((out / "results.json").read_text())["runs"][0]
    test_images = 1797 - 1797 // 2  # build_digits: half of scikit-learn's 1797 images are the test split
    assert (saved["num_eval"], saved["num_train"]) == (50, 30)
    role = DATASET_PRESETS["digits"].eval_split_role
    assert f"on the `test` split ({role}), 50 of its {test_images} images, drawn at random (step 2)" in text
    assert f"evaluated on its `test` split: {role} (50 of its {test_images} images, drawn at random)." in text
    assert "Training used 3 images per class (a few-shot subset)." in text
    assert {r.dataset_name for r in results} == {"scikit-learn digits"}


def test_a_name_is_never_taken_for_a_hub_id():
    from smile_hf.model_card import is_hub_id

    assert is_hub_id("ethz/food101") and is_hub_id("cifar10")
    assert not is_hub_id("scikit-learn digits") and not is_hub_id("/data/birds") and not is_hub_id(None)
    card = build_model_card(model_name="m", method="finetune", dataset_id="scikit-learn digits",
                            results=TrainingResults(eval_metrics={"accuracy": 0.5}))  # fmt: skip
    assert card.data.datasets is None and "huggingface.co/datasets" not in card.text
    assert card.data.eval_results[0].dataset_name == "scikit-learn digits"  # named, not marked local
