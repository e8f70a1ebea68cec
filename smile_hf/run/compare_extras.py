# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The figures of a comparison drawn from all its runs, in its `--output_dir`: the reliability diagram of every
method (`reliability.png`, from each run's predictions on the evaluation split after training) and, with
`--analyze`, the linearity analysis of every saved run ([`smile_hf.analysis`]: each run's `linearity.*` in its
folder, the table and plot of all of them in `linearity.{md,json,png}`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from ..analysis import analyze_run, write_linearity, write_linearity_report
from ..calibration import plot_reliability
from ..config import SmileTrainingArguments
from ..metrics import softmax
from .arguments import InputError

logger = logging.getLogger(__name__)

RELIABILITY_FILE = "reliability.png"
"""The reliability diagram of every method, in the comparison's folder."""
LINEARITY_FILE = "linearity.md"
"""The linearity table of every run (`--analyze`), in the comparison's folder (with `.json` and `.png` beside)."""


def comparison_figures(output_dir: str) -> list[str]:
    """The files of this module in the comparison folder `output_dir` (deleted with the runs they were drawn from,
    `--overwrite_output_dir`)."""
    stem = os.path.join(output_dir, os.path.splitext(LINEARITY_FILE)[0])
    return [os.path.join(output_dir, RELIABILITY_FILE), *(f"{stem}.{ext}" for ext in ("md", "json", "png"))]


def remove_comparison_figures(output_dir: str) -> None:
    """Delete the figures of an earlier comparison in `output_dir` ([`comparison_figures`])."""
    for path in comparison_figures(output_dir):
        if os.path.isfile(path):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            os.remove(path)


def check_analysis(analyze: bool, training_args: SmileTrainingArguments) -> None:
    """Before any training: an [`InputError`] if `--analyze` cannot measure the runs (they would not be saved)."""
    if analyze and training_args.do_train and training_args.save_strategy == "no":
        raise InputError("--analyze measures the saved models: drop --save_strategy no (e.g. --save_strategy steps).")


def eval_predictions(trainer) -> tuple[np.ndarray, np.ndarray] | None:
    """The trained model's probabilities on the trainer's evaluation split and their labels (`trainer.predict`: run
    it on every process); None without an evaluation split."""
    if trainer.eval_dataset is None:
        return None
    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="reliability")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return softmax(np.asarray(logits, dtype=np.float64)), np.asarray(prediction.label_ids)


def write_reliability(predictions: dict[str, list[tuple[np.ndarray, np.ndarray]]], output_dir: str, title: str = "") -> str | None:
    """The reliability diagram of every method (`label -> [(probabilities, labels) of each seed]`, the seeds pooled)
    in `output_dir`/[`RELIABILITY_FILE`]; None (with a warning) without matplotlib or predictions."""
    curves = {
        label: (np.concatenate([p for p, _ in runs]), np.concatenate([y for _, y in runs]))
        for label, runs in predictions.items() if runs
    }  # fmt: skip
    if not curves:
        return None
    try:
        return plot_reliability(curves, os.path.join(output_dir, RELIABILITY_FILE), title=title)
    except ImportError as error:
        logger.warning(f"No reliability diagram: {error}")
        return None


def analyze_runs(run_dirs: Sequence[str], output_dir: str, argv: Sequence[str] = ()) -> list[str]:
    """[`analyze_run`] of every saved run of `run_dirs` (its `linearity.*` written in its folder, unless that is
    `output_dir`), then the table and plot of all of them in `output_dir` ([`write_linearity_report`], which records
    the comparison's arguments `argv`); prints and returns the paths of the combined files."""
    results = []
    for run_dir in run_dirs:
        logger.info(f"Linearity analysis of {run_dir}")
        result = analyze_run(run_dir)
        if os.path.normpath(run_dir) != os.path.normpath(output_dir):
            write_linearity(result, run_dir)
        results.append(result)
    command = " ".join(["python examples/compare_methods.py", *argv])
    paths = write_linearity_report(results, os.path.join(output_dir, LINEARITY_FILE), command)
    print("Linearity analysis: " + ", ".join(paths), flush=True)
    return paths
