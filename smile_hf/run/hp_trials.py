# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""One trial of a hyperparameter search: the run's arguments with the trial's values, a `SmileTrainer` trained on
`data.train` and evaluated on the held-out `data.validation` (never on `data.eval`), and the objective."""

from __future__ import annotations

import copy
import shutil
from typing import Any

from transformers import set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import IntervalStrategy

from .._compat import shut_down_dataloader_workers
from ..config import SmileTrainingArguments
from ..data import PreparedData
from ..metrics import ClassificationMetrics
from ..trainer import SmileTrainer
from ..tuning import apply_values
from .arguments import ModelArguments
from .loading import student

TRIALS_FOLDER = "hp_search"
"""The trials' scratch folders, `<output_dir>/hp_search/trial-<n>` (removed after each trial)."""


def trial_arguments(training_args: SmileTrainingArguments, values: dict[str, Any], output_dir: str) -> SmileTrainingArguments:
    """The arguments of one trial: the run's, with `values`, in `output_dir`, evaluated once at the end, saving,
    pushing, reporting and calibrating nothing."""
    args = copy.deepcopy(training_args)
    apply_values(args, values)
    args.output_dir = output_dir
    args.save_strategy = IntervalStrategy.NO
    args.eval_strategy = IntervalStrategy.NO
    args.load_best_model_at_end = False
    args.push_to_hub = False
    args.report_to = []
    args.calibration = "none"
    args.disable_tqdm = True
    return args


def objective_value(metrics: dict[str, float], objective: str) -> float:
    """The search's objective from `trainer.evaluate()`'s metrics: top-1 accuracy or the loss."""
    return float(metrics["eval_accuracy" if objective == "accuracy" else "eval_loss"])


def validation_trainer(model, args: SmileTrainingArguments, data: PreparedData, **kwargs) -> SmileTrainer:
    """A trainer on `data.train` (`data.search_train` where set: the training data without the dataset's own
    validation split), evaluated on the held-out `data.validation` (never on `data.eval`); `kwargs` go to
    `SmileTrainer` (`model_init`, `teacher_model`). The scores are computed directly (the `evaluate` module's
    result, and the trainer pickles for Ray's workers)."""
    train = data.search_train if getattr(data, "search_train", None) is not None else data.train
    return SmileTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=data.validation,
        compute_metrics=ClassificationMetrics(), **kwargs,
    )  # fmt: skip


def run_trial(model_args: ModelArguments, training_args: SmileTrainingArguments, data: PreparedData,
              values: dict[str, Any], output_dir: str, objective: str) -> float:  # fmt: skip
    """Train one trial with `values` and return its objective on the validation split."""
    args = trial_arguments(training_args, values, output_dir)
    set_seed(args.seed)
    trainer = validation_trainer(student(model_args, args, data, from_scratch=False), args, data)
    trainer.remove_callback(PrinterCallback)  # one progress bar over the trials, not every trial's logs
    trainer.train()
    value = objective_value(trainer.evaluate(), objective)
    shut_down_dataloader_workers(trainer)
    shutil.rmtree(output_dir, ignore_errors=True)  # nothing kept of a trial but its values and metric
    return value
