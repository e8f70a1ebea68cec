"""Text runs through the driver (`smile_hf.run`): a CSV folder and the offline text preset end to end with the bundled
tiny BERT, `--predict_file`, the export read back by `pipeline("text-classification")`, evaluation without training,
and the model / data mismatches refused in one line."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from transformers import pipeline

from smile_hf import run as run_smile
from smile_hf.run.arguments import BUNDLED_CHECKPOINT, BUNDLED_TEXT_CHECKPOINT, resolve_bundled
from smile_hf.run.driver import run_config

TEXT_MODEL = resolve_bundled(BUNDLED_TEXT_CHECKPOINT)
SNAPSHOT = resolve_bundled("data/debian-descriptions")
TINY = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
        "--logging_strategy", "no", "--report_to", "none", "--disable_tqdm", "True",
        "--dataloader_num_workers", "0"]  # fmt: skip


def csv_subset(path, sections, per_section, skip=0):
    """`per_section` rows of each of `sections` from a snapshot file, as (text, label) rows."""
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [(r["text"], s) for s in sections for r in [r for r in rows if r["section"] == s][skip : skip + per_section]]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def csv_folder(tmp_path):
    sections = ["games", "mail", "math"]
    train = write_csv(tmp_path / "train.csv", csv_subset(f"{SNAPSHOT}/target_train.csv", sections, 4))
    validation = write_csv(tmp_path / "validation.csv", csv_subset(f"{SNAPSHOT}/target_test.csv", sections, 3))
    return train, validation


def test_csv_folder_end_to_end_and_the_pipeline_agrees(tmp_path, csv_folder):
    train, validation = csv_folder
    output = tmp_path / "run"
    result = run_smile.main([
        "--model_name_or_path", TEXT_MODEL, "--train_file", train, "--validation_file", validation, "--method",
        "smile", "--max_seq_length", "48", "--do_predict", "--predict_file", validation, "--top_k", "2",
        "--output_dir", str(output), *TINY,
    ])  # fmt: skip
    assert result["num_labels"] == 3 and result["num_train"] == 12 and result["num_eval"] == 9
    assert json.loads((output / "config.json").read_text())["id2label"] == {"0": "games", "1": "mail", "2": "math"}
    with open(result["predictions"], encoding="utf-8") as f:
        predicted = list(csv.DictReader(f))
    with open(validation, encoding="utf-8") as f:
        truth = list(csv.DictReader(f))
    assert [p["text"] for p in predicted] == [t["text"] for t in truth]
    # the run's own accuracy is that of its predictions (same model, same tokenization)
    correct = sum(p["label_1"] == t["label"] for p, t in zip(predicted, truth))
    assert result["metrics"]["eval_accuracy"] == pytest.approx(correct / len(truth), abs=1e-9)
    # the export, read back by transformers' pipeline: the same labels, the same scores (float32: 1e-5)
    classifier = pipeline("text-classification", model=str(output), device=torch.device("cpu"))
    outputs = classifier([t["text"] for t in truth], truncation=True, max_length=48)
    assert [o["label"] for o in outputs] == [p["label_1"] for p in predicted]
    assert [o["score"] for o in outputs] == pytest.approx([float(p["score_1"]) for p in predicted], abs=1e-5)

    evaluated = run_smile.main([
        "--do_train", "False", "--do_eval", "--model_name_or_path", str(output), "--validation_file", validation,
        "--max_seq_length", "48", "--output_dir", str(tmp_path / "eval"), "--report_to", "none",
    ])  # fmt: skip
    assert evaluated["metrics"]["eval_accuracy"] == pytest.approx(result["metrics"]["eval_accuracy"], abs=1e-9)


def test_offline_text_preset_end_to_end(tmp_path):
    result = run_smile.main([
        "--dataset", "debian_sections", "--train_samples_per_class", "2", "--max_eval_samples", "24",
        "--method", "finetune", "--output_dir", str(tmp_path), *TINY,
    ])  # fmt: skip
    assert result["model"] == TEXT_MODEL  # the preset's default: the bundled text checkpoint
    assert result["num_train"] == 12 and result["num_eval"] == 24
    assert result["data_source"]["train_samples_per_class"] == 2 and result["global_step"] == 2


def test_text_data_with_an_image_checkpoint_is_refused(csv_folder):
    with pytest.raises(run_smile.InputError, match="not a text classifier: AutoModelForSequenceClassification"):
        run_smile.main(["--model_name_or_path", resolve_bundled(BUNDLED_CHECKPOINT), "--train_file", csv_folder[0]])


def test_image_data_with_a_text_checkpoint_is_refused():
    with pytest.raises(run_smile.InputError, match="is a text classifier .* and the data are images"):
        run_smile.main(["--model_name_or_path", TEXT_MODEL, "--dataset", "digits"])


def test_an_image_run_config_has_no_text_option():
    model_args, data_args, training_args = run_smile.parse_args(["--dataset", "digits"])
    data = run_config(model_args, data_args, training_args)["data"]
    assert not {"train_file", "max_seq_length", "text_column_names"} & set(data)  # old run folders still resume
    model_args, data_args, training_args = run_smile.parse_args(["--dataset", "debian_sections"])
    assert run_config(model_args, data_args, training_args)["data"]["max_seq_length"] == 128


def test_compare_and_calibration_on_text(tmp_path):
    from smile_hf.run.compare import main as compare

    results = compare([
        "--dataset", "debian_sections", "--train_samples_per_class", "3", "--max_eval_samples", "18",
        "--compare_methods", "finetune,mixup", "--seeds", "0", "--calibration", "temperature",
        "--output_dir", str(tmp_path), *TINY,
    ])  # fmt: skip
    assert [r["method"] for r in results if not r["from_scratch"]] == ["finetune", "mixup"]
    assert all(r["num_eval"] == 18 and r["calibration"]["temperature"] > 0 for r in results)
    # the held-out validation split is carved out of the 3 shots per section: 1 held out, 2 trained on
    assert all(r["num_train"] == 12 and r["validation_split"]["examples"] == 6 for r in results)


def test_hyperparameter_search_on_text(tmp_path):
    result = run_smile.main([
        "--dataset", "debian_sections", "--train_samples_per_class", "3", "--max_eval_samples", "18",
        "--method", "finetune", "--hp_search_trials", "2", "--output_dir", str(tmp_path), *TINY,
    ])  # fmt: skip
    search = json.loads((tmp_path / "hp_search.json").read_text())
    assert len(search["trials"]) == 2 and result["hp_search"]["best_values"]
    assert result["num_train"] == 12  # 1 of the 3 shots per section held out for the search, as for images


def test_an_option_of_the_other_modality_is_refused():
    with pytest.raises(run_smile.InputError, match="--max_seq_length: read for text data only, and these data are image"):
        run_smile.parse_args(["--dataset", "digits", "--max_seq_length", "64"])
    with pytest.raises(run_smile.InputError, match="--crop_pct, --image_column: read for image data only"):
        run_smile.parse_args(["--dataset", "debian_sections", "--image_column", "x", "--crop_pct", "0.9"])
