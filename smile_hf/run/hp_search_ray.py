# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""`--hp_search_backend ray`: the search as Ray Tune trials, through `Trainer.hyperparameter_search(backend="ray")`
with `model_init` (each trial loads a fresh student), on the cluster of `--ray_address` / `RAY_ADDRESS` (a local
Ray instance when neither is set), each trial with the resources of `--ray_resources_per_trial`."""

from __future__ import annotations

import functools
import os
from typing import Any

from ..config import SmileTrainingArguments
from ..data import PreparedData
from ..modeling import load_student_with_classes_of
from .arguments import DataTrainingArguments, InputError, ModelArguments
from .hp_search_report import SearchRecord, TrialRecord
from .hp_trials import TRIALS_FOLDER, objective_value, trial_arguments, validation_trainer
from .loading import student


def parse_resources(text: str | None) -> dict[str, float]:
    """`"cpu=4,gpu=1"` -> `{"cpu": 4.0, "gpu": 1.0}`; None -> one CPU. A malformed entry is an [`InputError`]."""
    if not text:
        return {"cpu": 1}
    resources = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            resources[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--ray_resources_per_trial {text!r}: expected name=number pairs, e.g. cpu=4,gpu=1.") from None
    return resources


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (else `RAY_ADDRESS`, else start a local instance), unless already joined."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def ray_search(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments,
    data: PreparedData, record: SearchRecord, param_space: dict[str, Any],
) -> None:  # fmt: skip
    """Run `record.trials_requested` Ray Tune trials of `param_space` (results under `<output_dir>/hp_search/ray`)
    and fill `record` with every trial and the best one."""
    connect(data_args.ray_address)
    args = trial_arguments(training_args, {}, os.path.join(training_args.output_dir, TRIALS_FOLDER))
    name = student(model_args, args, data, from_scratch=False)  # the checkpoint's name; the loading options set
    name = os.path.abspath(name) if os.path.isdir(name) else name  # the workers run in their own folders
    model_init = functools.partial(load_student_with_classes_of, name, data.train, dict(args.model_init_kwargs))
    trainer = validation_trainer(None, args, data, model_init=model_init, teacher_model=name)  # source: loaded
    best = trainer.hyperparameter_search(
        hp_space=lambda _: param_space, backend="ray", n_trials=record.trials_requested, direction=record.direction,
        compute_objective=functools.partial(objective_value, objective=record.objective),
        resources_per_trial=parse_resources(data_args.ray_resources_per_trial),
        storage_path=os.path.abspath(os.path.join(training_args.output_dir, TRIALS_FOLDER, "ray")),
    )  # fmt: skip
    record.study = os.path.abspath(os.path.join(training_args.output_dir, TRIALS_FOLDER, "ray"))
    for number, trial in enumerate(best.run_summary.trials):
        result = trial.last_result or {}
        record.trials.append(TrialRecord(
            number=number, values={k: trial.config[k] for k in param_space if k in trial.config},
            value=result.get("objective"), state="COMPLETE" if "objective" in result else str(trial.status),
            duration_s=result.get("time_total_s"),
        ))  # fmt: skip
        if trial.trial_id == best.run_id:
            record.best_number = number
    record.best_values = {k: best.hyperparameters[k] for k in param_space}
    record.best_value = float(best.objective)
