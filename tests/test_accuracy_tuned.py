# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The tuned rows of the accuracy benchmark (benchmarks/accuracy_tuned.py) on a tiny budget: the search never touches
the test images, both methods get the same number of trials, and the reported values are the study's best."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

pytest.importorskip("optuna", reason="the tuned rows need optuna (pip install smile_hf[tune])")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(REPO, "checkpoints", "fmnist-resnet-tiny")


@pytest.fixture(autouse=True)
def keep_global_state():
    """The benchmark's runs silence the libraries' logs, progress bars and warnings and register the `mnist` preset,
    process-wide (each run has a process of its own there); restore all of it for the tests that follow."""
    import logging
    import warnings

    import datasets
    import transformers

    from smile_hf.data import DATASET_PRESETS

    verbosity, presets = transformers.logging.get_verbosity(), dict(DATASET_PRESETS)
    bars = transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    smile_level = logging.getLogger("smile_hf").level
    with warnings.catch_warnings():
        yield
    transformers.logging.set_verbosity(verbosity)
    (transformers.utils.logging.enable_progress_bar if bars[0] else transformers.utils.logging.disable_progress_bar)()
    (datasets.enable_progress_bars if bars[1] else datasets.disable_progress_bars)()
    logging.getLogger("smile_hf").setLevel(smile_level)
    DATASET_PRESETS.clear()
    DATASET_PRESETS.update(presets)


class HiddenTestImages:
    """Stands in for the test split during the search: any use of it fails."""

    def __getattr__(self, name):
        raise AssertionError(f"the search used the test images (.{name})")

    def __len__(self):
        raise AssertionError("the search used the test images (len)")

    def __getitem__(self, index):
        raise AssertionError("the search used the test images ([])")

    def __iter__(self):
        raise AssertionError("the search used the test images (iter)")


def test_stand_in_fails_on_use():
    stand_in = HiddenTestImages()
    for use in (len, iter, lambda d: d[0], lambda d: d.set_transform, lambda d: d.features):
        with pytest.raises(AssertionError, match="the search used the test images"):
            use(stand_in)


@pytest.mark.skipif(not os.path.isfile(os.path.join(CHECKPOINT, "config.json")), reason="no bundled checkpoint")
@pytest.mark.cpu_only("benchmarks/accuracy_tuned.py trains on the CPU (use_cpu=True in the benchmark itself)")
def test_tuned_rows_search_on_validation_and_report_the_best(tmp_path, monkeypatch):
    from benchmarks import accuracy_tuned

    real_load, real_final = accuracy_tuned.load_data, accuracy_tuned.final_run
    test_splits, final_values = [], []

    def load_without_test_images(job):
        data, config = real_load(job)
        test_splits.append(data.eval)
        return dataclasses.replace(data, eval=HiddenTestImages()), config

    def final_with_test_images(job, data, config, values):
        assert isinstance(data.eval, HiddenTestImages)  # the search is over: hand the test images back
        final_values.append(dict(values))
        return real_final(job, dataclasses.replace(data, eval=test_splits[-1]), config, values)

    monkeypatch.setattr(accuracy_tuned, "load_data", load_without_test_images)
    monkeypatch.setattr(accuracy_tuned, "final_run", final_with_test_images)
    out, md = tmp_path / "tuned.json", tmp_path / "tuned.md"
    accuracy_tuned.main([
        "--targets", "digits", "--shots", "5", "--seeds", "0", "--tune_trials", "2", "--max_steps", "2",
        "--workers", "1", "--output", str(out), "--markdown", str(md),
    ])  # fmt: skip

    payload = json.loads(out.read_text())
    assert payload["settings"]["methods"] == ["finetune", "smile", "finetune[tuned]", "smile[tuned]"]
    runs = {r["method"]: r for r in payload["runs"]}
    assert set(runs) == set(payload["settings"]["methods"])
    # the default rows and the final tuned runs: 5 x 10 training images, the whole digits test half (899)
    assert all(r["train_images"] == 50 and r["eval_images"] == 899 and r["steps"] == 2 for r in runs.values())
    tuned = [runs["finetune[tuned]"], runs["smile[tuned]"]]
    assert final_values == [r["search"]["best_values"] for r in tuned]
    for run in tuned:
        search = run["search"]
        trials = search["trials"]
        assert len(trials) == 2  # the same budget for both methods
        assert "learning_rate" in search["space"] and "weight_decay" in search["space"]
        # round(0.2 x 5) = 1 image of each of the 10 classes held out: trials train on 40, are scored on 10
        assert all(t["validation"]["eval_images"] == 10 and t["validation"]["train_images"] == 40 for t in trials)
        assert all(t["value"] == t["validation"]["accuracy"] for t in trials)
        # the study's best, recomputed from the trials: the highest validation accuracy
        best_value = max(t["value"] for t in trials)
        best = next(t for t in trials if t["number"] == search["best_number"])
        assert search["best_value"] == best["value"] == best_value
        assert search["best_values"] == best["values"]
        # the final run trained with them (read back from its arguments)
        assert run["trained_with"] == pytest.approx(search["best_values"], rel=1e-12)
    assert set(runs["smile[tuned]"]["search"]["best_values"]) > {"learning_rate", "mixup_alpha"}
    text = md.read_text()
    assert "| smile[tuned] |" in text and "smile[tuned] − finetune[tuned]" in text
