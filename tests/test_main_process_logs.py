"""What every process of a distributed run does, only the main process reports: the class names filled in at
saving are logged once, not once per rank."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from datasets import ClassLabel, Dataset
from transformers import AutoModelForImageClassification
from transformers.utils import logging as hf_logging

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.modeling import fill_label_names

from .testing_utils import TINY_CONFIGS, training_device_args


@pytest.mark.parametrize("main_process", [True, False])
def test_class_names_are_filled_on_every_process_and_logged_by_the_main_one(tmp_path, caplog, monkeypatch, main_process):
    train = Dataset.from_dict({"label": [0, 1, 2]}).cast_column("label", ClassLabel(names=["cat", "dog", "owl"]))
    args = SmileTrainingArguments(output_dir=str(tmp_path), method="finetune", report_to="none", **training_device_args())
    trainer = SmileTrainer(model=AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"](3)), args=args,
                           train_dataset=train)  # fmt: skip
    monkeypatch.setattr(trainer, "is_world_process_zero", lambda: main_process)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.INFO, logger="smile_hf"):
            trainer.save_model()
    finally:
        hf_logging.disable_propagation()
    assert trainer.model.config.id2label == {0: "cat", 1: "dog", 2: "owl"}
    assert caplog.text.count("Saving the class names") == (1 if main_process else 0)


def test_class_names_already_in_the_config_are_not_announced_again():
    config = SimpleNamespace(num_labels=3, id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, label2id={})
    assert fill_label_names(config, ["0", "1", "2"])  # digits' class names look like placeholders
    assert not fill_label_names(config, ["0", "1", "2"])  # a second save changes nothing: nothing to log
    assert config.id2label == {0: "0", 1: "1", 2: "2"} and config.label2id == {"0": 0, "1": 1, "2": 2}
