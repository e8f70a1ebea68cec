"""examples/compare_methods.py (`smile_hf.run.compare`) keeps `run_smile.py`'s guarantees: an output folder that
holds other runs is refused (or cleaned with --overwrite_output_dir, so that results.json, the curves and the run
folders describe the same runs), each run resumes only its own checkpoints, `--resume_from_checkpoint last` resumes
every run, and `--do_train False --do_eval` evaluates the saved runs without training."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from smile_hf.checkpoints import OutputDirError
from smile_hf.run import InputError
from smile_hf.run import compare as compare_methods

from .test_run_reliability import resumes  # noqa: F401 (the fixture `trains` builds on)
from .testing_utils import script_device_args


def compare_argv(output_dir, *extra, methods="finetune,smile"):
    """A 2-step comparison of `methods` on seed 0 (a few seconds on the test device)."""
    return [
        "--dataset", "digits", "--train_samples_per_class", "2", "--max_eval_samples", "20", "--seeds", "0",
        "--compare_methods", methods, "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "64", "--report_to", "none", "--disable_tqdm", "True", "--torch_num_threads",
        "1", "--output_dir", str(output_dir), *script_device_args(), *extra,
    ]  # fmt: skip


@pytest.fixture
def trains(resumes):  # noqa: F811  (the fixture imported above)
    """The checkpoint every `SmileTrainer.train` call resumes from (None: a fresh start), in order; torch's thread
    count restored after `--torch_num_threads`."""
    threads = torch.get_num_threads()
    yield resumes
    torch.set_num_threads(threads)


def saved_labels(path) -> list[str]:
    return [run["label"] for run in json.loads(path.read_text())["runs"]]


def test_other_runs_are_refused_then_overwritten_with_the_table_and_curves(tmp_path, trains):
    out, curves = tmp_path / "cmp", tmp_path / "plots" / "curves.png"
    compare_methods.main(compare_argv(out, "--save_strategy", "no", "--plot_curves", str(curves)))
    assert saved_labels(out / "results.json") == ["finetune", "smile"] and curves.is_file()
    assert len(trains) == 2
    # the same comparison again: its runs are finished
    with pytest.raises(OutputDirError, match="finetune-seed0 holds a finished run"):
        compare_methods.main(compare_argv(out, "--save_strategy", "no"))
    # another comparison into the same folder: smile-seed0 is not one of its runs, named before anything trains
    with pytest.raises(OutputDirError, match=r"holds 1 other run\(s\) than this comparison's \(smile-seed0\)"):
        compare_methods.main(compare_argv(out, "--save_strategy", "no", methods="finetune,l2sp"))
    assert len(trains) == 2
    argv = compare_argv(out, "--save_strategy", "no", "--overwrite_output_dir", "True", methods="finetune,l2sp")
    compare_methods.main(argv)
    figures = ["reliability.png"] if importlib.util.find_spec("matplotlib") else []  # of this comparison's runs
    assert len(trains) == 4 and sorted(os.listdir(out)) == ["finetune-seed0", "l2sp-seed0", *figures, "results.json"]
    assert saved_labels(out / "results.json") == ["finetune", "l2sp"]
    assert not curves.exists() and not curves.with_suffix(".json").exists()  # drawn from runs that are gone


def test_each_run_resumes_its_own_checkpoints_only(tmp_path, trains):
    out = tmp_path / "cmp"
    compare_methods.main(compare_argv(out, "--save_strategy", "steps", "--save_steps", "1"))
    for label in ("finetune", "smile"):  # interrupted before the end: no results
        os.remove(out / f"{label}-seed0" / "results.json")
    os.remove(out / "results.json")
    with pytest.raises(OutputDirError, match=r"checkpoints of another run \(training.learning_rate: 0.01 there"):
        compare_methods.main(compare_argv(out, "--save_strategy", "steps", "--save_steps", "1", "--learning_rate", "0.02"))
    assert trains == [None, None]
    runs = compare_methods.main(compare_argv(out, "--save_strategy", "steps", "--save_steps", "1", "--max_steps", "3",
                                             "--resume_from_checkpoint", "last"))  # fmt: skip
    assert trains[2:] == [str(out / "finetune-seed0" / "checkpoint-2"), str(out / "smile-seed0" / "checkpoint-2")]
    assert [run["global_step"] for run in runs] == [3, 3] and saved_labels(out / "results.json") == ["finetune", "smile"]
    with pytest.raises(InputError, match="a comparison of 2 runs resumes each from its own folder"):
        compare_methods.main(compare_argv(out, "--resume_from_checkpoint", str(out / "smile-seed0" / "checkpoint-3")))


def test_evaluation_only_evaluates_the_saved_runs(tmp_path, trains):
    out = tmp_path / "cmp"
    trained = compare_methods.main(compare_argv(out, "--save_strategy", "steps", "--save_steps", "100"))
    assert len(trains) == 2
    evaluated = compare_methods.main(compare_argv(out, "--do_train", "False", "--do_eval", "True"))
    assert len(trains) == 2  # nothing trained
    # the saved models on the same evaluation images (seed 0's subset): the final evaluation of training
    for before, after in zip(trained, evaluated):
        assert (after["label"], after["seed"], after["num_eval"]) == (before["label"], 0, 20)
        assert after["metrics"]["eval_accuracy"] == before["metrics"]["eval_accuracy"]
    assert saved_labels(out / "eval_results.json") == ["finetune", "smile"]
    assert saved_labels(out / "results.json") == ["finetune", "smile"]  # the training results stay
    with pytest.raises(InputError, match="no saved model in"):
        compare_methods.main(compare_argv(tmp_path / "nothing", "--do_train", "False", "--do_eval", "True"))
    with pytest.raises(InputError, match="pass --do_eval"):
        compare_methods.main(compare_argv(out, "--do_train", "False"))
    with pytest.raises(InputError, match="--plot_curves draws the curves of training"):
        compare_methods.main(compare_argv(out, "--do_train", "False", "--do_eval", "True", "--plot_curves", "c.png"))
    with pytest.raises(InputError, match="--do_predict: a comparison classifies no images"):
        compare_methods.main(compare_argv(out, "--do_predict", "True"))
