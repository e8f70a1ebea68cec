"""A search reads everything once: the data is prepared and scanned once, the image processor loaded once, the study
created once and the checkpoint read once for all trials (the student and the source model, copied for each trial),
and a trial's result is the same as that of a trial that loads the checkpoint itself, as a plain run does."""

from __future__ import annotations

import collections
import copy
import json
import os

import pytest
from transformers import AutoModelForImageClassification

import smile_hf.data.prepare as prepare_module
import smile_hf.text_setup as processor_module
from smile_hf.run import driver as driver_module
from smile_hf.run import hp_search as hp_search_module
from smile_hf.run import loading as loading_module
from smile_hf.run import main

optuna = pytest.importorskip("optuna", reason="the hyperparameter search needs the optional `optuna` (smile_hf[tune])")

TRIALS = 3


def search_argv(output_dir) -> list[str]:
    """SMILE (student, source model and teacher), 3-shot digits, 4 steps per trial, selecting on the validation loss."""
    return [
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "20", "--max_steps", "4",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64", "--method", "smile",
        "--hp_search_trials", str(TRIALS), "--hp_search_objective", "loss", "--report_to", "none",
        "--disable_tqdm", "True", "--save_strategy", "no", "--output_dir", str(output_dir),
    ]  # fmt: skip


def count_calls(monkeypatch, counts: collections.Counter, owner, name: str, key: str) -> None:
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        counts[key] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_a_search_loads_everything_once_and_its_trials_match_trials_that_load_the_checkpoint(tmp_path, monkeypatch):
    counts, during_search, captured = collections.Counter(), {}, {}
    count_calls(monkeypatch, counts, loading_module, "prepare_datasets", "data")
    count_calls(monkeypatch, counts, prepare_module, "handle_corrupt_images", "image scans")
    count_calls(monkeypatch, counts, loading_module, "load_image_processor", "processor")
    count_calls(monkeypatch, counts, processor_module, "load_image_processor", "processor")
    count_calls(monkeypatch, counts, optuna, "create_study", "study")
    real_from_pretrained = AutoModelForImageClassification.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):  # every model read from disk (student, source model)
        counts["model"] += 1
        return real_from_pretrained(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForImageClassification, "from_pretrained", classmethod(from_pretrained))
    real_search = hp_search_module.search

    def search(model_args, data_args, training_args, data, **kwargs):
        captured.update(model_args=model_args, training_args=copy.deepcopy(training_args), data=data)
        before = collections.Counter(counts)
        try:
            return real_search(model_args, data_args, training_args, data, **kwargs)
        finally:
            during_search.update(counts - before)

    monkeypatch.setattr(driver_module, "search", search)
    main(search_argv(tmp_path / "run"))

    with open(tmp_path / "run" / "hp_search.json", encoding="utf-8") as f:
        trials = json.load(f)["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE"] * TRIALS
    # the search: the checkpoint read twice (student with its new head, source model), whatever the number of trials;
    # nothing else loaded again; one study
    assert during_search == {"model": 2, "study": 1}
    # the whole command: the data prepared once (train and evaluation splits scanned once each), one processor
    assert counts["data"] == 1 and counts["image scans"] == 2 and counts["processor"] == 1

    # the first and last trials again, each loading the checkpoint itself (the plain run's path): the same validation
    # loss, bit for bit (the same weights; the trainer reseeds before training)
    for trial in (trials[0], trials[-1]):
        loss = hp_search_module.run_trial(
            captured["model_args"], captured["training_args"], captured["data"], trial["values"],
            os.path.join(tmp_path, f"again-{trial['number']}"), "loss",
        )  # fmt: skip
        assert loss == trial["value"], (trial["number"], loss, trial["value"])
