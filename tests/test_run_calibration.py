"""`run_smile.py --calibration temperature` through the run driver: the temperature is fitted on the validation split
held out of the training data, `results.json` has the calibration entry, and the exported model's `pipeline()`
probabilities are `softmax(logits / T)` of the same run trained without calibration."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from transformers import pipeline

from smile_hf.calibration import temperature_scaling
from smile_hf.run import main, parse_args, prepare_data

from .testing_utils import script_device_args


def calibration_argv(output_dir, *extra):
    """20 steps of fine-tuning on 5-shot digits (1 image per class held out: 10 validation images), 40 evaluated."""
    return [
        "--dataset", "digits", "--train_samples_per_class", "5", "--max_eval_samples", "40", "--max_steps", "20",
        "--method", "finetune", "--reference_recipe", "True", "--per_device_train_batch_size", "8",
        "--report_to", "none", "--disable_tqdm", "True", "--output_dir", str(output_dir),
        *script_device_args(), *extra,
    ]  # fmt: skip


def raw_images(dataset, column: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(example[column]["bytes"])) for example in dataset.with_format(None)]


def logits_of(classify, images: list[Image.Image], labels: dict) -> torch.Tensor:
    """The raw logits `pipeline()` gives (`function_to_apply="none"`), in label id order."""
    rows = []
    for image in images:
        scores = {p["label"]: p["score"] for p in classify(image, top_k=len(labels), function_to_apply="none")}
        rows.append([scores[labels[i]] for i in range(len(labels))])
    return torch.tensor(rows)


def test_the_temperature_is_fitted_on_the_held_out_split_and_exported(tmp_path):
    calibrated = main(calibration_argv(tmp_path / "calibrated", "--calibration", "temperature"))
    # the same run (same seed, same held-out split, so the same training) without calibration
    plain = main(calibration_argv(tmp_path / "plain", "--validation_split_fraction", "0.2"))
    assert plain["calibration"] is None
    assert plain["validation_split"]["description"] == calibrated["validation_split"]["description"]
    entry = calibrated["calibration"]
    saved = json.loads((tmp_path / "calibrated" / "results.json").read_text())["runs"][0]["calibration"]
    assert saved == entry and entry["num_samples"] == 10 and calibrated["num_train"] == 40

    model_args, data_args, _ = parse_args(calibration_argv(tmp_path / "x"))
    data = prepare_data(data_args, model_args, 42, None, validation=True)  # the run's split (--seed 42)
    plain_model = pipeline("image-classification", model=str(tmp_path / "plain"), device="cpu")
    labels = plain_model.model.config.id2label
    # T refitted here on the uncalibrated model's logits of the held-out images; logits rounded to 4 digits by
    # the pipeline move the fitted T by far less than 1e-3
    validation_logits = logits_of(plain_model, raw_images(data.validation, data.image_column), labels)
    refit = temperature_scaling(validation_logits, torch.tensor(list(data.validation.with_format(None)["label"])))
    assert entry["temperature"] == pytest.approx(refit.temperature, rel=1e-3)
    assert entry["temperature"] != pytest.approx(1.0, abs=1e-2)  # calibration changed something

    # the exported model's probabilities are softmax(logits / T) of the uncalibrated one (pipeline scores and
    # logits rounded to 4 digits: 2e-4)
    images = raw_images(data.eval.select(range(8)), data.image_column)
    expected = torch.softmax(logits_of(plain_model, images, labels) / entry["temperature"], -1)
    calibrated_model = pipeline("image-classification", model=str(tmp_path / "calibrated"), device="cpu")
    got = []
    for image in images:
        scores = {p["label"]: p["score"] for p in calibrated_model(image, top_k=len(labels))}
        got.append([scores[labels[i]] for i in range(len(labels))])
    torch.testing.assert_close(torch.tensor(got), expected, rtol=0, atol=2e-4)
    card = (tmp_path / "calibrated" / "README.md").read_text()
    assert "10 images held out of the training data (1 per class, seed 42)" in card
