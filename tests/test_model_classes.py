"""Evaluating a trained model on data holding some of its classes: label ids matched to the model's by class name
(`smile_hf.data.align_to_model_classes`), and `run_smile.py --do_train False --do_eval` on such a folder, checked
against the model run by hand on the same files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification

from smile_hf import run as run_smile  # the driver of examples/run_smile.py
from smile_hf.data import (
    DataError,
    ImageTransform,
    TransformConfig,
    align_to_model_classes,
    eval_image_processor,
    prepare_datasets,
    set_transforms,
)

from .testing_utils import TINY_CONFIGS, script_device_args

MODEL_CLASSES = {0: "cat", 1: "dog", 2: "owl"}


def write_class_folders(root, classes: list[str], per_class: int = 3) -> dict[str, str]:
    """`root/<class>/<i>.png` random RGB images; return file -> class name."""
    rng = np.random.default_rng(len(classes))
    files = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            path = root / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
            files[str(path)] = name
    return files


def test_data_of_some_of_the_models_classes_gets_the_models_label_ids(tmp_path, caplog):
    files = write_class_folders(tmp_path / "val", ["dog", "owl"])  # folder ids: dog 0, owl 1
    data = prepare_datasets(train_dir=str(tmp_path / "val"), validation_dir=str(tmp_path / "val"), disable_tqdm=True)
    set_transforms(data, TransformConfig(crop_size=(8, 8), resize_size=(9, 9)))
    with caplog.at_level(logging.WARNING, logger="smile_hf.data"):
        missing = align_to_model_classes(data, MODEL_CLASSES)
    assert missing == ["cat"]
    assert data.label_names == ["cat", "dog", "owl"]
    paths = [value["path"] for value in data.eval.with_format(None)["image"]]
    by_name = {name: i for i, name in MODEL_CLASSES.items()}
    assert [data.eval[i]["labels"] for i in range(len(paths))] == [by_name[files[p]] for p in paths]
    assert data.eval[0]["pixel_values"].shape == (3, 8, 8)  # the transform is kept
    assert caplog.text.count("The data has 2 of the model's 3 classes (none of ['cat'])") == 1


def test_data_of_exactly_the_models_classes_is_left_as_it_is_and_other_classes_are_refused(tmp_path):
    write_class_folders(tmp_path / "same", ["cat", "dog", "owl"])
    data = prepare_datasets(train_dir=str(tmp_path / "same"), validation_dir=str(tmp_path / "same"), disable_tqdm=True)
    before = data.eval
    assert align_to_model_classes(data, MODEL_CLASSES) == [] and data.eval is before
    write_class_folders(tmp_path / "other", ["dog", "eel"])
    data = prepare_datasets(
        train_dir=str(tmp_path / "other"), validation_dir=str(tmp_path / "other"), disable_tqdm=True
    )
    with pytest.raises(DataError, match=r"The data has 1 class\(es\) the model does not have: \['eel'\]"):
        align_to_model_classes(data, MODEL_CLASSES)


@pytest.mark.cpu_only("the run and the check by hand both evaluate the tiny model on the CPU")
def test_eval_only_on_a_folder_of_some_classes_scores_the_model_on_them(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"](3)).eval()
    model.config.id2label, model.config.label2id = MODEL_CLASSES, {n: i for i, n in MODEL_CLASSES.items()}
    config = TransformConfig(crop_size=(16, 16), resize_size=(18, 18))
    model.save_pretrained(tmp_path / "model")
    eval_image_processor(config).save_pretrained(tmp_path / "model")
    files = write_class_folders(tmp_path / "val", ["dog", "owl"], per_class=4)

    result = run_smile.main([
        "--do_train", "False", "--do_eval", "--validation_dir", str(tmp_path / "val"),
        "--model_name_or_path", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"),
        "--report_to", "none", "--disable_tqdm", "True", *script_device_args("cpu"),
    ])  # fmt: skip

    transform = ImageTransform(config, train=False)
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([transform(Image.open(f)) for f in files])).logits
    truth = torch.tensor([{n: i for i, n in MODEL_CLASSES.items()}[name] for name in files.values()])
    assert result["num_eval"] == 8
    assert result["metrics"]["eval_accuracy"] == pytest.approx(float((logits.argmax(-1) == truth).float().mean()))
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved["metrics"]["eval_accuracy"] == result["metrics"]["eval_accuracy"]
