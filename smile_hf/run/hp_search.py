# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""`--hp_search_trials N`: search the method's hyperparameters on the validation split held out of the training
data (or the dataset's own validation split, [`smile_hf.run.validation_source`]), then set the best values on the
run's arguments (the run then trains once with them on the training data and evaluates on the evaluation split, which
the search never sees).

Each trial is one `SmileTrainer` run (`model` named, loaded fresh per trial as in a plain run) trained on
`data.train` (`data.search_train`, without the dataset's own validation split, where it is set) and evaluated on
`data.validation`; `data.eval` is never passed to it.

The Optuna backend drives `optuna` directly rather than through `Trainer.hyperparameter_search`, which creates an
in-memory study and always runs `n_trials` more trials: a search stored in SQLite in the output folder
(`hp_search.db`) resumes a killed search where it stopped (a trial left running by the kill is marked failed and
its point tried again), counts the trials already done towards `N`, does not rerun a finished one, and keeps each
trial's duration for `hp_search.json`. The Ray backend is `Trainer.hyperparameter_search(backend="ray")` (with
`model_init`): Ray Tune, the distributed engine the `Trainer` supports, on the cluster of `--ray_address` /
`RAY_ADDRESS`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from ..checkpoints import FINISHED_RUN_FILE, OutputDirError
from ..config import SmileTrainingArguments
from ..data import PreparedData
from ..tuning import apply_values, default_search_space, load_search_space, ray_space, suggest
from .arguments import DataTrainingArguments, InputError, ModelArguments
from .hp_search_report import SearchRecord, TrialRecord, write_search_outputs
from .hp_trials import TRIALS_FOLDER, run_trial
from .validation_source import check_validation_source

logger = logging.getLogger(__name__)

STUDY_FILE = "hp_search.db"
STUDY_NAME = "hp_search"


def needs_validation(data_args: DataTrainingArguments, training_args: SmileTrainingArguments) -> bool:
    """Whether the run holds a validation split out of the training data: for a search, for calibration, or when
    `--validation_split_fraction` / `--validation_samples_per_class` asks for one."""
    asked = data_args.validation_split_fraction is not None or data_args.validation_samples_per_class is not None
    return asked or data_args.hp_search_trials > 0 or training_args.calibration != "none"


def search_space(data_args: DataTrainingArguments, training_args: SmileTrainingArguments) -> dict[str, dict]:
    """The space searched: `--hp_space` (checked), else the method's default ([`default_search_space`])."""
    if data_args.hp_space is None:
        return default_search_space(training_args)
    try:
        return load_search_space(data_args.hp_space, training_args)
    except ValueError as error:
        raise InputError(str(error)) from error


def check_search(data_args: DataTrainingArguments, training_args: SmileTrainingArguments) -> None:
    """Before anything is loaded: an [`InputError`] for a search or a validation split without training, a negative
    trial count, a backend that is not installed, or a `--validation_source` that cannot be used."""
    check_validation_source(data_args)
    carving = data_args.validation_split_fraction is not None or data_args.validation_samples_per_class is not None
    if data_args.validation_source != "auto" and not (data_args.hp_search_trials or carving) and (
        training_args.calibration == "none"
    ):
        raise InputError(
            f"--validation_source {data_args.validation_source} chooses the validation split of --hp_search_trials "
            "and --calibration, and neither is asked: drop it, or add one of them."
        )
    asked = [f"--{name}" for name in ("hp_search_trials", "validation_split_fraction", "validation_samples_per_class")
             if getattr(data_args, name)]  # fmt: skip
    if asked and not training_args.do_train:
        raise InputError(f"{', '.join(asked)} hold(s) a validation split out of training: use with training (--do_train True).")
    if data_args.hp_search_trials < 0:
        raise InputError(f"--hp_search_trials must be >= 0, got {data_args.hp_search_trials}.")
    if data_args.hp_search_trials == 0:
        return
    module, extra = ("optuna", "smile_hf[tune]") if data_args.hp_search_backend == "optuna" else ("ray", "'ray[tune]'")
    if importlib.util.find_spec(module) is None:
        raise InputError(f"--hp_search_backend {data_args.hp_search_backend} needs {module}: pip install {extra}.")


def check_not_finished(training_args: SmileTrainingArguments) -> None:
    """Before a search: a finished run in `--output_dir` is refused now, as [`resume_point`] would refuse it after the
    search (unless `--overwrite_output_dir` or `--resume_from_checkpoint`)."""
    if training_args.overwrite_output_dir or training_args.resume_from_checkpoint:
        return
    if os.path.isfile(os.path.join(training_args.output_dir, FINISHED_RUN_FILE)):
        raise OutputDirError(
            f"{training_args.output_dir} holds a finished run ({FINISHED_RUN_FILE}): start fresh with "
            "--overwrite_output_dir True (the stored search is reused; --hp_search_rerun True runs it again) or "
            "another --output_dir."
        )


def search(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments,
    data: PreparedData, disable_tqdm: bool = False,
) -> SearchRecord:  # fmt: skip
    """Run (or resume, or reuse) the search of `--hp_search_trials` trials, write `hp_search.json` and its plot into
    `--output_dir`, set the best values on `training_args` and return the search's record."""
    if data.validation is None:
        raise InputError("--hp_search_trials needs a validation split held out of the training data (none was made).")
    space = search_space(data_args, training_args)
    direction = "maximize" if data_args.hp_search_objective == "accuracy" else "minimize"
    record = SearchRecord(
        backend=data_args.hp_search_backend, objective=data_args.hp_search_objective, direction=direction,
        trials_requested=data_args.hp_search_trials, space=space, method=training_args.method,
        validation_split=data.validation_split.to_dict() if data.validation_split else None,
    )  # fmt: skip
    logger.info(
        f"Hyperparameter search ({record.backend}, {record.trials_requested} trials, validation "
        f"{data_args.hp_search_objective}) of {', '.join(space)} on {data.validation_split.describe()}"
    )
    if data_args.hp_search_backend == "ray":
        from .hp_search_ray import ray_search

        ray_search(model_args, data_args, training_args, data, record, ray_space(space))
    else:
        optuna_search(model_args, data_args, training_args, data, record, disable_tqdm)
    write_search_outputs(record, training_args.output_dir)
    apply_values(training_args, record.best_values)
    logger.info(f"Best trial {record.best_number}: {record.best_values} (validation {record.objective} "
                f"{record.best_value:.4f}); training once with them")  # fmt: skip
    return record


def study_attributes(record: SearchRecord) -> dict[str, Any]:
    """What a stored study must match to be resumed: the method, the space, the objective, the validation split."""
    split = dict(record.validation_split or {})
    split.pop("description", None)
    return {"method": record.method, "space": record.space, "objective": record.objective, "validation_split": split}


def open_study(output_dir: str, record: SearchRecord, seed: int, rerun: bool):
    """The Optuna study of `output_dir/hp_search.db` (created, or loaded to resume); `rerun` deletes a stored one
    first. A stored study of another method, space, objective or validation split is an [`InputError`]."""
    import optuna

    os.makedirs(output_dir, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(os.path.join(output_dir, STUDY_FILE))}")
    if rerun and STUDY_NAME in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        optuna.delete_study(study_name=STUDY_NAME, storage=storage)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, load_if_exists=True, direction=record.direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
    )  # fmt: skip
    attributes = study_attributes(record)
    stored = {k: study.user_attrs[k] for k in attributes if k in study.user_attrs}
    if stored and stored != attributes:
        differing = [k for k in attributes if stored.get(k) != attributes[k]]
        raise InputError(
            f"{os.path.join(output_dir, STUDY_FILE)} holds a search of another {', '.join(differing)}: rerun with "
            "--hp_search_rerun True to start it afresh, or use another --output_dir."
        )
    for key, value in attributes.items():
        study.set_user_attr(key, value)
    return study


def retry_interrupted(study) -> None:
    """Mark the trials a killed search left running as failed, and queue their points to be tried again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
        logger.warning(f"Trial {trial.number} was interrupted: its values are tried again.")


def optuna_search(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments,
    data: PreparedData, record: SearchRecord, disable_tqdm: bool = False,
) -> None:  # fmt: skip
    """Run the trials still missing from the stored study (none when it is complete), then fill `record`."""
    import optuna
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    study = open_study(training_args.output_dir, record, training_args.seed, data_args.hp_search_rerun)
    retry_interrupted(study)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    missing = max(0, record.trials_requested - done)
    if done:
        logger.info(f"Search stored in {STUDY_FILE}: {done} trial(s) done, {missing} to run")
    folder = os.path.join(training_args.output_dir, TRIALS_FOLDER)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, record.space)
        output_dir = os.path.join(folder, f"trial-{trial.number}")
        return run_trial(model_args, training_args, data, values, output_dir, record.objective)

    if missing:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with tqdm(total=record.trials_requested, initial=done, desc="hp search trials", disable=disable_tqdm) as bar:
            study.optimize(objective, n_trials=missing, callbacks=[lambda *_: bar.update(1)])
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
    record.study = os.path.abspath(os.path.join(training_args.output_dir, STUDY_FILE))
    record.trials = [
        TrialRecord(number=t.number, values=t.params, value=t.value, state=t.state.name,
                    duration_s=t.duration.total_seconds() if t.duration else None)
        for t in study.trials
    ]  # fmt: skip
    best = study.best_trial
    record.best_number, record.best_values, record.best_value = best.number, dict(best.params), float(best.value)
