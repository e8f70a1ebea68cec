"""`smile-hf train --hp_search_trials N` end to end on digits: the search selects on the validation split held out of
the training data (never on the evaluation split), resumes after a kill, is not rerun once finished, writes
`hp_search.json`, its plot and the card's section, and trains once with the best values; `--hp_space` replaces the
space and an unknown name is one error naming the valid ones. The Ray backend runs two trials on a local Ray."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smile_hf.run import InputError, main
from smile_hf.run import driver as driver_module
from smile_hf.run import hp_search as hp_search_module
from smile_hf.tuning import SHARED_HYPERPARAMETERS

from .testing_utils import subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
optuna = pytest.importorskip("optuna", reason="the hyperparameter search needs the optional `optuna` (smile_hf[tune])")


def search_argv(output_dir, *extra, trials: int = 3):
    """A tiny search: 3-shot digits (1 image per class held out), 4 steps per trial, 50 evaluation images."""
    return [
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "50", "--max_steps", "4",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64", "--method", "finetune",
        "--hp_search_trials", str(trials), "--report_to", "none", "--disable_tqdm", "True",
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def stored_trials(output_dir) -> list:
    study = optuna.load_study(study_name="hp_search", storage=f"sqlite:///{os.path.join(output_dir, 'hp_search.db')}")
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


class Forbidden:
    """Stands in for the evaluation split during the search: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the search used the evaluation split ({name})")

    def __len__(self):
        raise AssertionError("the search used the evaluation split (len)")

    def __getitem__(self, key):
        raise AssertionError("the search used the evaluation split (getitem)")

    def __iter__(self):
        raise AssertionError("the search used the evaluation split (iter)")


@pytest.fixture
def guarded_search(monkeypatch):
    """The driver's search with the evaluation split replaced by [`Forbidden`] while it runs; records the size of
    the split each trial evaluated on."""
    real, evaluated = hp_search_module.search, []
    real_objective = hp_search_module.objective_value

    def search(model_args, data_args, training_args, data, **kwargs):
        evaluation, data.eval = data.eval, Forbidden()
        try:
            return real(model_args, data_args, training_args, data, **kwargs)
        finally:
            data.eval = evaluation

    def objective_value(metrics, objective):
        evaluated.append(metrics["eval_num_samples"])
        return real_objective(metrics, objective)

    monkeypatch.setattr(driver_module, "search", search)
    monkeypatch.setattr(hp_search_module, "objective_value", objective_value)
    return evaluated


@pytest.fixture
def transformers_warnings():
    """The warnings transformers logs (the load report, `<Model> LOAD REPORT from: ...`, included)."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(level=logging.WARNING)
            self.reports = []

        def emit(self, record):
            self.reports.append(record.getMessage())

    handler = Collect()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    yield handler.reports
    transformers_logger.removeHandler(handler)


def test_the_search_selects_on_the_validation_split_then_trains_once_with_the_best_values(tmp_path, guarded_search):
    result = main(search_argv(tmp_path))
    record = read_json(tmp_path / "hp_search.json")
    assert guarded_search == [10, 10, 10]  # 3 trials, each on the 10 held-out images (1 of each class)
    assert record["validation_split"]["examples"] == 10 and record["validation_split"]["train_examples"] == 20
    assert set(record["space"]) == {"learning_rate", "weight_decay"}  # fine-tuning declares no hyperparameter
    assert len(record["trials"]) == 3 and all(t["state"] == "COMPLETE" and t["duration_s"] > 0 for t in record["trials"])
    best = max(record["trials"], key=lambda t: t["value"])  # maximising top-1, first of ties (Optuna's rule)
    assert record["best_value"] == best["value"] and record["best_values"] == best["values"]
    for trial in record["trials"]:
        for name, dimension in record["space"].items():
            assert dimension["low"] <= trial["values"][name] <= dimension["high"]
    # the final run: trained with the best values on the 20 training images, evaluated on the evaluation split
    saved = read_json(tmp_path / "training_args.json") if (tmp_path / "training_args.json").exists() else None
    trained = saved or read_json(tmp_path / "run_config.json")["training"]
    for name, value in record["best_values"].items():
        assert trained[name] == pytest.approx(value)
    assert result["num_train"] == 20 and result["num_eval"] == 50
    assert result["hp_search"]["best_values"] == record["best_values"]
    assert (tmp_path / "hp_search.png").stat().st_size > 0
    card = (tmp_path / "README.md").read_text()
    assert "### Hyperparameter search" in card and "optuna search, 3 trials over learning_rate, weight_decay" in card
    assert "10 images held out of the training data (1 per class, seed 42)" in card
    assert not (tmp_path / "hp_search").exists()  # the trials' scratch folders are removed


def test_the_load_report_of_a_new_head_is_printed_once_per_search(tmp_path, transformers_warnings):
    """3 classes on the bundled 10-class checkpoint: every load of the student reports the new head's size mismatch;
    the 3 trials print it once, the final run once more; no load warns that 3 classes do not match the checkpoint's
    10 labels (the new labels replace them)."""
    from PIL import Image

    for label in ("ant", "bee", "cat"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 60 * i).save(tmp_path / "data" / label / f"{i}.png")
    main(["--train_dir", str(tmp_path / "data"), "--model_name_or_path", str(REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny"),
          "--train_val_split", "0.25", "--max_steps", "1",
          "--per_device_train_batch_size", "4", "--method", "finetune", "--hp_search_trials", "3", "--report_to", "none",
          "--disable_tqdm", "True", "--save_strategy", "no", "--output_dir", str(tmp_path / "out")])  # fmt: skip
    load_reports = [message for message in transformers_warnings if "LOAD REPORT" in message]
    assert len(load_reports) == 2 and all("classifier.1.weight | MISMATCH" in report for report in load_reports)
    assert not [message for message in transformers_warnings if "incompatible to the `id2label`" in message]


def test_ray_trials_load_the_student_without_printing_the_load_report_again(transformers_warnings):
    """Ray Tune runs each trial in a worker of its own, with a pickled copy of the trainer, made after the trainer
    loaded the student once (its report printed): the copies' loads print none. A copy made before any load (a
    model_init that never printed the report) prints it."""
    import functools
    import pickle

    from smile_hf.modeling import load_student_with_classes_of

    load = functools.partial(
        load_student_with_classes_of, str(REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny"), None, {"num_labels": 3}
    )
    model_init = hp_search_module.LoadReportOnce(load)
    fresh_copy = pickle.loads(pickle.dumps(model_init))

    def reports():
        return sum("LOAD REPORT" in message for message in transformers_warnings)

    model_init()  # the trainer's own load, in the search's process
    assert reports() == 1  # 3 classes on a 10-class checkpoint: the new head is reported
    for _ in range(2):  # two trials, each in a worker
        assert pickle.loads(pickle.dumps(model_init))().config.num_labels == 3
    assert reports() == 1
    fresh_copy()
    assert reports() == 2
    load()  # outside a search, every load reports
    assert reports() == 3


def test_a_killed_search_resumes_and_a_finished_one_is_not_rerun(tmp_path, monkeypatch):
    real, calls = hp_search_module.run_trial, []

    def run_trial(*args, **kwargs):
        calls.append(args[3])  # the trial's values
        if len(calls) == 3 and not resumed:
            raise KeyboardInterrupt  # killed during the third trial
        return real(*args, **kwargs)

    monkeypatch.setattr(hp_search_module, "run_trial", run_trial)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        main(search_argv(tmp_path))
    first_two = [(t.number, t.params, t.value) for t in stored_trials(tmp_path)]
    assert len(first_two) == 2 and not (tmp_path / "results.json").exists()

    resumed, calls[:] = True, []
    main(search_argv(tmp_path))  # the same command again
    trials = stored_trials(tmp_path)
    assert len(trials) == 3 and len(calls) == 1  # only the missing trial ran
    assert [(t.number, t.params, t.value) for t in trials[:2]] == first_two  # the first two were not rerun
    assert len(read_json(tmp_path / "hp_search.json")["trials"]) == 4  # and the killed one is recorded as failed

    calls[:] = []
    main(search_argv(tmp_path, "--overwrite_output_dir", "True"))  # a finished study is reused, not rerun
    assert calls == [] and len(stored_trials(tmp_path)) == 3
    main(search_argv(tmp_path, "--overwrite_output_dir", "True", "--hp_search_rerun", "True"))
    assert len(calls) == 3 and len(stored_trials(tmp_path)) == 3  # asked: a fresh study of 3 trials


def test_a_trial_left_running_by_a_kill_is_failed_and_its_values_tried_again(tmp_path):
    """A SIGKILL leaves the running trial in state RUNNING in the database: reopening the study marks it failed and
    queues its values, so the next trial draws exactly them."""
    record = hp_search_module.SearchRecord(
        backend="optuna", objective="accuracy", direction="maximize", trials_requested=3,
        space={"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, method="finetune",
    )  # fmt: skip
    study = hp_search_module.open_study(str(tmp_path), record, seed=0, rerun=False)
    killed = study.ask()
    killed_value = killed.suggest_float("learning_rate", 1e-4, 1e-2, log=True)  # then the process dies
    reopened = hp_search_module.open_study(str(tmp_path), record, seed=0, rerun=False)
    hp_search_module.retry_interrupted(reopened)
    assert reopened.trials[killed.number].state == optuna.trial.TrialState.FAIL
    retried = reopened.ask()
    assert retried.suggest_float("learning_rate", 1e-4, 1e-2, log=True) == killed_value
    with pytest.raises(InputError, match="holds a search of another objective: rerun with --hp_search_rerun True"):
        record.objective = "loss"
        hp_search_module.open_study(str(tmp_path), record, seed=0, rerun=False)


def test_a_search_without_training_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"--hp_search_trials hold\(s\) a validation split out of training"):
        main(search_argv(tmp_path, "--do_train", "False", "--do_eval", "--model_name_or_path", str(tmp_path)))


def test_a_space_file_replaces_the_space_and_an_unknown_name_is_one_error(tmp_path):
    space = {"learning_rate": {"type": "float", "low": 0.001, "high": 0.002, "log": True}}
    (tmp_path / "space.json").write_text(json.dumps(space))
    main(search_argv(tmp_path / "run", "--hp_space", str(tmp_path / "space.json"), trials=2))
    record = read_json(tmp_path / "run" / "hp_search.json")
    assert record["space"] == space
    assert all(set(t["values"]) == {"learning_rate"} and 0.001 <= t["values"]["learning_rate"] <= 0.002
               for t in record["trials"])  # fmt: skip

    (tmp_path / "bad.json").write_text(json.dumps({"learning_rate": space["learning_rate"], "reg_lambda": {}}))
    with pytest.raises(InputError) as error:
        main(search_argv(tmp_path / "bad", "--hp_space", str(tmp_path / "bad.json"), "--method", "l2sp"))
    message = str(error.value)
    assert "unknown hyperparameter(s) ['reg_lambda'] for --method l2sp" in message  # SMILE's, not L2-SP's
    assert "\n" not in message and all(name in message for name in (*SHARED_HYPERPARAMETERS, "l2sp_alpha"))
    assert not (tmp_path / "bad").exists()  # refused before anything was trained or written


def test_compare_methods_searches_each_method_in_its_own_space(tmp_path):
    from smile_hf.methods import REGULARIZERS
    from smile_hf.run.compare import main as compare_main

    argv = search_argv(tmp_path, "--compare_methods", "finetune,l2sp", "--save_strategy", "no", trials=2)
    results = compare_main(argv)
    for result in results:
        record = read_json(tmp_path / f"{result['method']}-seed42" / "hp_search.json")
        declared = set(REGULARIZERS[result["method"]].search_space())  # L2-SP's declared space, none for fine-tuning
        assert set(record["space"]) == declared | {"learning_rate", "weight_decay"}
        assert len(record["trials"]) == 2 and result["hp_search"]["best_values"] == record["best_values"]


def test_the_ray_backend_runs_two_trials_on_a_local_ray(tmp_path):
    """In a fresh process, as the command runs (Ray pickles the trainer for its workers): two trials on a local Ray
    instance started by the script (no RAY_ADDRESS)."""
    pytest.importorskip("ray", reason="the Ray backend needs the optional `ray[tune]` (pip install 'ray[tune]')")
    argv = search_argv(tmp_path, "--hp_search_backend", "ray", "--ray_resources_per_trial", "cpu=1", trials=2)
    env = subprocess_env()
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "smile_hf.cli", "train", *argv], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_json(tmp_path / "hp_search.json")
    assert record["backend"] == "ray" and len(record["trials"]) == 2
    values = [t["value"] for t in record["trials"]]
    assert all(v is not None for v in values) and record["best_value"] == max(values)
    trained = read_json(tmp_path / "run_config.json")["training"]
    assert trained["learning_rate"] == pytest.approx(record["best_values"]["learning_rate"])


@pytest.mark.parametrize("trials", [2, 3, 5])
def test_the_log_axis_labels_of_hp_search_png_do_not_overlap(monkeypatch, trials):
    """Trials drawn log-uniformly in the default ranges of SMILE's log-scale weights (few trials: a narrow span of
    values, where matplotlib labels the minor ticks too): no two x tick labels of a panel overlap once drawn, and each
    log panel keeps at least two labels."""
    pytest.importorskip("matplotlib")
    hp_search = hp_search_module
    figures = []

    def keep(fig, path, title=""):
        fig.canvas.draw()
        figures.append(fig)
        return path

    monkeypatch.setattr(hp_search, "save_figure", keep)
    ranges = {"reg_lambda": (1e-3, 1.0), "aux_lambda": (1e-2, 1.0), "cls_lambda": (1e-6, 1e-2), "mixing_alpha": (0.1, 10.0),
              "learning_rate": (3e-3, 6e-3), "weight_decay": (1e-5, 1e-2)}  # fmt: skip
    space = {name: {"type": "float", "low": low, "high": high, "log": True} for name, (low, high) in ranges.items()}
    rng = np.random.default_rng(trials)
    records = [
        hp_search.TrialRecord(i, {n: float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for n, (lo, hi) in ranges.items()},
                              float(rng.uniform()))  # fmt: skip
        for i in range(trials)
    ]
    hp_search.plot_search(hp_search.SearchRecord("optuna", "accuracy", "maximize", trials, space, "smile", trials=records), "x.png")
    renderer = figures[0].canvas.get_renderer()
    for ax in figures[0].axes[: len(ranges)]:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticklabels(which="both") if t.get_text() and low <= t.get_position()[0] <= high]
        boxes = [t.get_window_extent(renderer) for t in shown]
        assert len(boxes) >= 2, ax.get_xlabel()
        assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), [t.get_text() for t in shown]


def test_every_trial_of_a_search_trains_on_the_unlabelled_images(tmp_path, monkeypatch):
    """FixMatch with `--unlabeled_from_train`: each of the 2 trials, then the final run, draws the unlabelled batch of
    each of its 4 steps from the stream of the training images left out of the 3-shot subset (30 images, of which
    10 are the held-out validation split, which the stream never holds)."""
    from smile_hf.unlabeled import UnlabeledStream

    draws, read = [], UnlabeledStream.batch

    def recording(stream, draw):
        draws.append((draw, len(stream.dataset), stream.batch_size))
        return read(stream, draw)

    monkeypatch.setattr(UnlabeledStream, "batch", recording)
    argv = search_argv(tmp_path, trials=2)
    argv[argv.index("finetune")] = "fixmatch"
    main([*argv, "--unlabeled_from_train", "True", "--unlabeled_batch_ratio", "0.5"])
    assert draws == [(draw, 898 - 30, 4) for draw in range(4)] * 3
    assert len(read_json(tmp_path / "hp_search.json")["trials"]) == 2
