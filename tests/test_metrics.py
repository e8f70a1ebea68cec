"""Offline metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from transformers import EvalPrediction

from smile_hf.metrics import ClassificationMetrics, expected_calibration_error, softmax, top_k_accuracy

# 4 examples, 6 classes. Ranks of the true label: 1st, 2nd, 6th, 3rd.
LOGITS = np.array(
    [
        [5.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1
        [1.0, 3.0, 2.0, 0.0, 0.0, 0.0],  # label 2: 2nd
        [0.0, 1.0, 2.0, 3.0, 4.0, -1.0],  # label 5: last
        [0.0, 3.0, 2.0, 1.0, 0.5, 0.2],  # label 3: 3rd
    ]
)
LABELS = np.array([0, 2, 5, 3])


def test_top_k_accuracy_by_hand():
    assert top_k_accuracy(LOGITS, LABELS, 1) == 0.25
    assert top_k_accuracy(LOGITS, LABELS, 2) == 0.5
    assert top_k_accuracy(LOGITS, LABELS, 3) == 0.75
    assert top_k_accuracy(LOGITS, LABELS, 5) == 0.75
    assert top_k_accuracy(LOGITS, LABELS, 6) == 1.0
    assert top_k_accuracy(LOGITS, LABELS, 50) == 1.0  # k beyond the number of classes


def test_top_k_ties_go_to_the_lower_index():
    logits = np.zeros((2, 3))
    assert top_k_accuracy(logits, np.array([0, 1]), 1) == 0.5


def test_softmax_is_stable_and_exact():
    probs = softmax(np.array([[1000.0, 1000.0 + math.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.25, 0.75]], rtol=1e-12)


def test_ece_by_hand():
    # confidences 0.85, 0.85 (one right, one wrong) -> bin (0.8, 0.9]: |0.5 - 0.85| = 0.35, weight 1/2
    # confidences 0.55, 0.55 (both right)           -> bin (0.5, 0.6]: |1.0 - 0.55| = 0.45, weight 1/2
    probs = np.array([[0.85, 0.15], [0.85, 0.15], [0.45, 0.55], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(0.5 * 0.35 + 0.5 * 0.45)
    # one bin: |accuracy - mean confidence| = |0.75 - 0.7|
    assert expected_calibration_error(probs, labels, num_bins=1) == pytest.approx(0.05)


def test_ece_is_zero_when_calibrated():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == 0.0


def test_compute_metrics_on_an_eval_prediction():
    metrics = ClassificationMetrics(top_k=(1, 5))(EvalPrediction(predictions=(LOGITS,), label_ids=LABELS))
    assert metrics["accuracy"] == 0.25
    assert metrics["top5_accuracy"] == 0.75
    assert metrics["num_samples"] == 4
    confidence = softmax(LOGITS).max(axis=1)
    correct = np.array([1.0, 0.0, 0.0, 0.0])
    expected = 0.0  # the definition, bin by bin: (b-1)/15 < confidence <= b/15
    for b in range(1, 16):
        members = (confidence > (b - 1) / 15) & (confidence <= b / 15)
        if members.any():
            expected += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    assert metrics["ece"] == pytest.approx(expected)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="top_k"):
        ClassificationMetrics(top_k=(0,))
