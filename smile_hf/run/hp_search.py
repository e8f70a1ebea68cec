# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""`--hp_search_trials N`: search the method's hyperparameters on the validation split held out of the training
data (or the dataset's own validation split, [`smile_hf.run.validation_source`]), then set the best values on the
run's arguments (the run then trains once with them on the training data and evaluates on the evaluation split, which
the search never sees). The options and the search space are in [`smile_hf.tuning`]; here are the search itself,
its trials, its two backends and what it leaves behind.

Each trial is one `SmileTrainer` run, on copies of the student and source model the search loads once
([`smile_hf.run.trial_models`]), trained on `data.train` (`data.search_train`, without the dataset's own validation
split, where it is set) and evaluated on `data.validation`; `data.eval` is never passed to it.

The Optuna backend drives `optuna` directly rather than through `Trainer.hyperparameter_search`, which creates an
in-memory study and always runs `n_trials` more trials: a search stored in SQLite in the output folder
(`hp_search.db`) resumes a killed search where it stopped (a trial left running by the kill is marked failed and
its point tried again), counts the trials already done towards `N`, does not rerun a finished one, and keeps each
trial's duration for `hp_search.json`. The Ray backend is `Trainer.hyperparameter_search(backend="ray")` (with
`model_init`, each trial loading a fresh student): Ray Tune, the distributed engine the `Trainer` supports, on the
cluster of `--ray_address` / `RAY_ADDRESS` (a local Ray instance when neither is set), each trial with the resources
of `--ray_resources_per_trial`.

A search leaves `hp_search.json` in the output folder (every trial's values, validation metric and duration, the best
values, the space and the validation split), `hp_search.png` beside it (the metric against each hyperparameter) and
the line of the model card ([`SearchRecord.summary`]).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import IntervalStrategy

from .._compat import shut_down_dataloader_workers
from ..checkpoints import FINISHED_RUN_FILE, OutputDirError
from ..config import SmileTrainingArguments
from ..data import PreparedData
from ..metrics import ClassificationMetrics
from ..modeling import load_student_with_classes_of
from ..plotting import pyplot, save_figure
from ..trainer import SmileTrainer
from ..tuning import apply_values, default_search_space, load_search_space, ray_space, suggest
from .arguments import DataTrainingArguments, InputError, ModelArguments
from .loading import student, unlabeled_for
from .trial_models import TrialModels, load_trial_models
from .validation_source import check_validation_source

logger = logging.getLogger(__name__)


# ---- what a search leaves behind --------------------------------------------------------------------------------------

RESULTS_FILE = "hp_search.json"
PLOT_FILE = "hp_search.png"


@dataclass
class TrialRecord:
    """One trial: its number, its values, its validation metric (None unless it completed), its state
    (`COMPLETE`, `FAIL`...) and how long it took (seconds)."""

    number: int
    values: dict[str, Any]
    value: float | None
    state: str = "COMPLETE"
    duration_s: float | None = None


@dataclass
class SearchRecord:
    """A search: how it ran (backend, objective and its direction, trials asked for, space, method, validation split,
    where the study is stored), its trials and its best one."""

    backend: str
    objective: str
    direction: str
    trials_requested: int
    space: dict[str, dict[str, Any]]
    method: str
    validation_split: dict | None = None
    study: str | None = None
    trials: list[TrialRecord] = field(default_factory=list)
    best_number: int | None = None
    best_values: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the model card and `results.json`: backend, trials, space, objective, validation split, best."""
        completed = sum(t.state == "COMPLETE" for t in self.trials)
        split = (self.validation_split or {}).get("description", "a validation split held out of the training data")
        best = ", ".join(f"{k}={_short(v)}" for k, v in self.best_values.items())
        return (
            f"{self.backend} search, {completed} trials over {', '.join(self.space)}, selecting the best validation "
            f"{'top-1 accuracy' if self.objective == 'accuracy' else 'loss'} on {split}; best values: {best} "
            f"(validation {self.objective} {_short(self.best_value)}), then trained once with them"
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_search_outputs(record: SearchRecord, output_dir: str) -> str:
    """Write `hp_search.json` and (with matplotlib) `hp_search.png` into `output_dir`; return the JSON's path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RESULTS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record.to_dict(), f, indent=2, default=str)
    try:
        plot_search(record, os.path.join(output_dir, PLOT_FILE))
    except ImportError:
        logger.warning(f"matplotlib is not installed: no {PLOT_FILE} (pip install matplotlib).")
    return path


def log_axis(ax, dimension: dict[str, Any], values: list[float]) -> None:
    """A log x axis over the searched range of `dimension` (and the trials' `values`), labelled at ticks that do not
    overlap: at most 4 powers of ten when the range spans a decade or more, else its two ends; no minor labels
    (matplotlib labels the minor ticks `2x10^-2, 3x10^-2, ...` of a narrow range, side by side)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    low, high = min([dimension["low"], *values]), max([dimension["high"], *values])
    ax.set_xscale("log")
    ax.set_xlim(low / 1.3, high * 1.3)
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=4) if high >= 10 * low else FixedLocator([low, high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_search(record: SearchRecord, path: str) -> str:
    """One panel per hyperparameter: the validation metric of every completed trial against its value (log axis
    for a log-scale dimension), the best trial circled."""
    plt = pyplot("Plotting the search")
    names = list(record.space)
    done = [t for t in record.trials if t.value is not None]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs = [t.values.get(name) for t in done]
        ax.scatter([str(x) if isinstance(x, (str, bool)) else x for x in xs], [t.value for t in done], s=18)
        best = next((t for t in done if t.number == record.best_number), None)
        if best is not None and name in best.values:
            x = best.values[name]
            ax.scatter([str(x) if isinstance(x, (str, bool)) else x], [best.value], s=80, facecolors="none", edgecolors="red")
        if record.space[name].get("log"):
            log_axis(ax, record.space[name], [x for x in xs if isinstance(x, (int, float))])
        ax.set_xlabel(name)
        ax.set_ylabel(f"validation {record.objective}")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{record.method}: {len(done)} trials ({record.backend})")
    return save_figure(fig, path)

# ---- the search -------------------------------------------------------------------------------------------------------

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
        validation_split=data.validation_split.to_dict(data.items) if data.validation_split else None,
    )  # fmt: skip
    logger.info(
        f"Hyperparameter search ({record.backend}, {record.trials_requested} trials, validation "
        f"{data_args.hp_search_objective}) of {', '.join(space)} on {data.validation_split.describe(data.items)}"
    )
    if data_args.hp_search_backend == "ray":
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
        return run_trial(model_args, training_args, data, values, output_dir, record.objective, models)

    if missing:
        models = load_trial_models(model_args, training_args, data)  # read from disk once, copied for each trial
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with tqdm(total=record.trials_requested, initial=done, desc="hp search trials", disable=disable_tqdm) as bar, \
                one_load_report():  # fmt: skip
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

class FirstLoadReport(logging.Filter):
    """A filter that lets through the first load report of transformers (`<Model> LOAD REPORT from: ...`: the new
    head's size mismatch, the same for every trial) and drops the later ones."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" not in str(record.msg):
            return True
        shown, self.seen = not self.seen, True
        return shown


LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")
"""The loggers transformers writes its load report with (the model's, or the report module's own)."""


@contextlib.contextmanager
def _load_reports_filtered(only_first: FirstLoadReport) -> Iterator[None]:
    """While inside: the load reports of transformers pass `only_first` (shown until one has been)."""
    loggers = [logging.getLogger(name) for name in LOAD_REPORT_LOGGERS]
    for logger_ in loggers:
        logger_.addFilter(only_first)
    try:
        yield
    finally:
        for logger_ in loggers:
            logger_.removeFilter(only_first)


@contextlib.contextmanager
def one_load_report():
    """While the trials run: transformers' load report printed once per search, not once per trial, and no
    per-trial "Loading weights" progress bar (the search has its own)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with _load_reports_filtered(FirstLoadReport()):
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class LoadReportOnce:
    """A `model_init` that prints transformers' load report of the student once per search: `load()` loads it, and
    only the first report passes. Ray Tune runs each trial in a worker of its own, with a pickled copy of the
    trainer made after the trainer's first `model_init` call (here), which keeps the "shown" state: the trials load
    quietly.

    Args:
        load (`Callable[[], PreTrainedModel]`): loads the student (picklable).
    """

    def __init__(self, load: Callable[[], Any]):
        self.load = load
        self.only_first = FirstLoadReport()

    def __call__(self):
        with _load_reports_filtered(self.only_first):
            return self.load()


# ---- one trial --------------------------------------------------------------------------------------------------------

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
    args, unlabeled = unlabeled_for(args, data)  # never a validation image (smile_hf.run.loading.add_unlabeled)
    return SmileTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=data.validation,
        compute_metrics=ClassificationMetrics(), unlabeled_dataset=unlabeled, **kwargs,
    )  # fmt: skip


def run_trial(model_args: ModelArguments, training_args: SmileTrainingArguments, data: PreparedData,
              values: dict[str, Any], output_dir: str, objective: str, models: TrialModels | None = None) -> float:  # fmt: skip
    """Train one trial with `values` and return its objective on the validation split. With `models` (the search's
    [`TrialModels`]) it trains copies of them; without, it loads the checkpoint as a plain run does."""
    args = trial_arguments(training_args, values, output_dir)
    set_seed(args.seed)
    model = student(model_args, args, data, from_scratch=False)  # the checkpoint's name; the loading options set
    source = None
    if models is not None:
        model, source = models.copies()
    trainer = validation_trainer(model, args, data, teacher_model=source)
    trainer.remove_callback(PrinterCallback)  # one progress bar over the trials, not every trial's logs
    trainer.train()
    value = objective_value(trainer.evaluate(), objective)
    shut_down_dataloader_workers(trainer)
    shutil.rmtree(output_dir, ignore_errors=True)  # nothing kept of a trial but its values and metric
    return value

# ---- the Ray backend --------------------------------------------------------------------------------------------------

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
    model_init = LoadReportOnce(
        functools.partial(load_student_with_classes_of, name, data.train, dict(args.model_init_kwargs))
    )
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
