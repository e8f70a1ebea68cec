# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Classification metrics computed locally: top-k accuracy and expected calibration error, packaged as a
`compute_metrics` function for the `Trainer` ([`ClassificationMetrics`]) and as an `evaluate` module shipped in the
package ([`load_classification_metric`], by local path: no network), which gives the same numbers.

The Trainer gathers the predictions of every process before calling `compute_metrics`, so under several processes
the metrics are those of the whole evaluation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import evaluate

CLASSIFICATION_METRIC_PATH = str(Path(__file__).resolve().parent / "evaluate_modules" / "smile_classification")
"""Folder of the `evaluate` module of top-k accuracy and ECE shipped in the package: `evaluate.load(path)` reads it
offline."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for large logits."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of examples whose label is among the `k` highest logits (all of them when `k` >= classes).

    Ties are broken towards the lower class index (a stable sort), so the result does not depend on chance.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    k = min(k, logits.shape[-1])
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return float((order == labels[:, None]).any(axis=-1).mean())


def calibration_bins(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reliability bins of the top-1 predictions: confidences (the highest probability) put in `num_bins`
    equal-width bins ((0, 1/M], (1/M, 2/M], ...).

    Returns:
        `(counts, accuracy, confidence)`, each of length `num_bins`: examples per bin, and the accuracy and mean
        confidence of each bin (NaN for an empty bin).
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    confidence = probabilities.max(axis=-1)
    correct = (probabilities.argmax(axis=-1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / counts
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / counts
    return counts, accuracy, mean_confidence


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """Expected calibration error (Guo et al., 2017) of the top-1 predictions.

    Confidences (the highest probability) are put in `num_bins` equal-width bins ([`calibration_bins`]);
    `ECE = sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|`.
    """
    if len(np.asarray(labels)) == 0:
        return float("nan")
    counts, accuracy, confidence = calibration_bins(probabilities, labels, num_bins)
    filled = counts > 0
    return float((counts[filled] / counts.sum() * np.abs(accuracy[filled] - confidence[filled])).sum())


def classification_scores(
    logits: Any, labels: Any, top_k: Sequence[int] = (1, 5), ece_bins: int = 15
) -> dict[str, float]:
    """Top-k accuracies (`accuracy` for k = 1, `top{k}_accuracy` otherwise) and `ece` of the softmax of `logits`
    (`n x classes`) against the class ids `labels` (`n`). The computation behind both [`ClassificationMetrics`] and
    the `evaluate` module."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    scores = {"accuracy" if k == 1 else f"top{k}_accuracy": top_k_accuracy(logits, labels, k) for k in top_k}
    scores["ece"] = expected_calibration_error(softmax(logits), labels, ece_bins)
    return scores


def load_classification_metric(**kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the module shipped in the package (top-k accuracy and ECE), from its local path: works
    offline. `kwargs` go to `evaluate.load` (e.g. `experiment_id`, `num_process`, `process_id`)."""
    import evaluate

    return evaluate.load(CLASSIFICATION_METRIC_PATH, **kwargs)


class ClassificationMetrics:
    """`compute_metrics` for the `Trainer`: `accuracy` (top-1), `top{k}_accuracy` for each extra `k`, `ece`, and
    `num_samples` (how many predictions were scored, i.e. gathered from every process).

    Args:
        top_k (`Sequence[int]`, *optional*, defaults to `(1, 5)`): the k of the reported top-k accuracies; k = 1 is
            reported as `accuracy`.
        ece_bins (`int`, *optional*, defaults to 15): bins of the expected calibration error.
        metric (`evaluate.EvaluationModule`, *optional*): compute the scores with this `evaluate` module (called as
            `metric.compute(predictions=logits, references=labels, top_k=..., ece_bins=...)`), e.g.
            [`load_classification_metric`]`()`; by default they are computed directly, with the same result.

    Example:

    ```python
    trainer = SmileTrainer(..., compute_metrics=ClassificationMetrics())
    trainer.evaluate()  # {"eval_accuracy": ..., "eval_top5_accuracy": ..., "eval_ece": ..., ...}
    ```
    """

    def __init__(self, top_k: Sequence[int] = (1, 5), ece_bins: int = 15, metric: Any = None):
        if any(k < 1 for k in top_k) or ece_bins < 1:
            raise ValueError(f"top_k values and ece_bins must be >= 1, got {tuple(top_k)} and {ece_bins}.")
        self.top_k = tuple(top_k)
        self.ece_bins = ece_bins
        self.metric = metric

    def __call__(self, eval_prediction) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
        finite = np.isfinite(logits).all(axis=-1)
        if not finite.all():
            raise ValueError(
                f"{int((~finite).sum())} of the {len(finite)} evaluated examples have non-finite logits: the model "
                "diverged (NaN or inf weights), so no metric is computed. Lower the learning rate and train again."
            )
        if self.metric is None:
            metrics = classification_scores(logits, labels, self.top_k, self.ece_bins)
        else:
            metrics = self.metric.compute(
                predictions=logits, references=labels, top_k=self.top_k, ece_bins=self.ece_bins
            )
            metrics = {key: float(value) for key, value in (metrics or {}).items()}  # None on non-main processes
        metrics["num_samples"] = int(labels.shape[0])
        return metrics


def as_compute_metrics(compute_metrics: Any) -> Any:
    """`compute_metrics` as the `Trainer` calls it: an `evaluate` module (anything with `compute` that is not
    callable) is wrapped in a [`ClassificationMetrics`] that computes through it; anything else is returned as is."""
    if compute_metrics is not None and not callable(compute_metrics) and hasattr(compute_metrics, "compute"):
        return ClassificationMetrics(metric=compute_metrics)
    return compute_metrics


__all__ = [
    "CLASSIFICATION_METRIC_PATH",
    "ClassificationMetrics",
    "as_compute_metrics",
    "calibration_bins",
    "classification_scores",
    "expected_calibration_error",
    "load_classification_metric",
    "softmax",
    "top_k_accuracy",
]
