"""The `evaluate` module shipped in the package: loads offline by local path, is package data, gives exactly the
numbers of `smile_hf.metrics`, and `SmileTrainer(compute_metrics=<the module>)` evaluates through it."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import EvalPrediction

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.metrics import (
    CLASSIFICATION_METRIC_PATH,
    ClassificationMetrics,
    expected_calibration_error,
    load_classification_metric,
    softmax,
    top_k_accuracy,
)

from .test_export import labelled_dataset, one_thread  # noqa: F401  (one_thread: autouse fixture)
from .test_hub import no_network  # noqa: F401
from .testing_utils import source_and_student, training_device_args

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline_metric(monkeypatch, tmp_path, no_network):  # noqa: F811
    """The module loaded with the Hub switched off and any network connection failing the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return load_classification_metric(experiment_id="test", cache_dir=str(tmp_path))


def logits_and_labels(n=300, classes=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=3.0, size=(n, classes)).astype(np.float32), rng.integers(0, classes, size=n)


def test_module_is_package_data():
    """setup.py ships the module file: its package_data pattern matches it."""
    path = Path(CLASSIFICATION_METRIC_PATH) / "smile_classification.py"
    assert path.is_file()
    patterns = re.search(r'package_data=\{"smile_hf": \[([^\]]*)\]', (REPO_ROOT / "setup.py").read_text()).group(1)
    relative = path.relative_to(REPO_ROOT / "smile_hf").as_posix()
    assert any(fnmatch.fnmatch(relative, p.strip().strip('"')) for p in patterns.split(","))
    assert "evaluate" in (REPO_ROOT / "setup.py").read_text().split("install_requires")[1].split("]")[0]


def test_offline_module_gives_the_numbers_of_smile_hf_metrics(offline_metric):
    logits, labels = logits_and_labels()
    scores = offline_metric.compute(predictions=logits, references=labels, top_k=(1, 3, 5), ece_bins=10)
    # independent of the module: the functions of smile_hf.metrics, exact equality (same float64 computation)
    assert scores == {
        "accuracy": top_k_accuracy(logits, labels, 1),
        "top3_accuracy": top_k_accuracy(logits, labels, 3),
        "top5_accuracy": top_k_accuracy(logits, labels, 5),
        "ece": expected_calibration_error(softmax(logits), labels, 10),
    }
    # and against a direct count: top-1 = share of argmax hits
    assert scores["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()), abs=0)
    direct = ClassificationMetrics()(EvalPrediction(logits, labels))
    through = ClassificationMetrics(metric=offline_metric)(EvalPrediction(logits, labels))
    assert through == direct and direct["num_samples"] == len(labels)


def test_module_can_be_added_to_in_batches(offline_metric):
    logits, labels = logits_and_labels(seed=1)
    for start in range(0, len(labels), 64):
        offline_metric.add_batch(predictions=logits[start : start + 64], references=labels[start : start + 64])
    expected = ClassificationMetrics()(EvalPrediction(logits, labels))
    assert offline_metric.compute() == {k: v for k, v in expected.items() if k != "num_samples"}


def test_trainer_accepts_the_module_as_compute_metrics(tmp_path, offline_metric):
    """Same evaluation with `compute_metrics=<evaluate module>` and with `ClassificationMetrics()`."""
    results = []
    for compute_metrics in (offline_metric, ClassificationMetrics()):
        source, student = source_and_student("resnet")
        args = SmileTrainingArguments(
            output_dir=str(tmp_path), report_to="none", **training_device_args(), method="finetune",
            per_device_eval_batch_size=8,
            disable_tqdm=True,
        )  # fmt: skip
        trainer = SmileTrainer(
            model=student, args=args, train_dataset=labelled_dataset(), eval_dataset=labelled_dataset(num=20, seed=1),
            compute_metrics=compute_metrics,
        )  # fmt: skip
        assert isinstance(trainer.compute_metrics, ClassificationMetrics)
        results.append({k: v for k, v in trainer.evaluate().items() if not k.endswith(("_time", "runtime", "per_second"))})
    assert results[0] == results[1]
    assert results[0]["eval_num_samples"] == 20 and 0.0 <= results[0]["eval_ece"] <= 1.0
