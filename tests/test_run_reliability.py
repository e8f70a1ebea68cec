"""`smile-hf train` when things go wrong: an output folder is never silently reused (finished runs, other runs),
resume happens only when asked or when the saved arguments match, and bad arguments, damaged checkpoints or model
folders and diverged runs end in one `smile-hf train: error:` line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smile_hf import SmileTrainer
from smile_hf import run as run_smile
from smile_hf.checkpoints import RUN_CONFIG_NAME, IncompleteCheckpointError, OutputDirError, list_checkpoints

from .testing_utils import script_device_args, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_argv(output_dir, *extra):
    """A 3-step run on the test device (in this process or as a subprocess)."""
    return [
        "--dataset", "digits", "--train_samples_per_class", "2", "--max_eval_samples", "20", "--method", "smile",
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64",
        "--save_strategy", "steps", "--save_steps", "1", "--report_to", "none", "--disable_tqdm", "True",
        "--output_dir", str(output_dir), *script_device_args(), *extra,
    ]  # fmt: skip


@pytest.fixture
def resumes(monkeypatch):
    """The checkpoints `SmileTrainer` restores from, in order (None: a fresh start)."""
    seen, train = [], SmileTrainer.train

    def spy(self, resume_from_checkpoint=None, *args, **kwargs):
        seen.append(resume_from_checkpoint)
        return train(self, resume_from_checkpoint, *args, **kwargs)

    monkeypatch.setattr(SmileTrainer, "train", spy)
    return seen


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run of 3 steps whose end (results.json) never came: its checkpoints and run_config.json remain."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    run_smile.main(tiny_argv(out))
    os.remove(out / "results.json")
    return out


def copy_of(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "run")
    return tmp_path / "run"


def test_a_finished_run_is_never_reused(tmp_path, resumes):  # learning_rate 0.01: the digits preset's recipe
    out = tmp_path / "run"
    run_smile.main(tiny_argv(out))
    assert resumes == [None] and json.loads((out / RUN_CONFIG_NAME).read_text())["training"]["learning_rate"] == 0.01
    with pytest.raises(OutputDirError, match=r"holds a finished run \(results.json; the same arguments\): start fresh with --overwrite"):
        run_smile.main(tiny_argv(out))
    with pytest.raises(OutputDirError, match=r"finished run \(results.json; differing: training.learning_rate: 0.01 there, 0.02 here\)"):
        run_smile.main(tiny_argv(out, "--learning_rate", "0.02"))
    result = run_smile.main(tiny_argv(out, "--overwrite_output_dir", "True", "--learning_rate", "1e-3"))
    assert resumes == [None, None] and result["global_step"] == 3
    assert json.loads((out / RUN_CONFIG_NAME).read_text())["training"]["learning_rate"] == 1e-3


def test_another_run_is_refused_naming_the_differences(interrupted, tmp_path, resumes):
    out = copy_of(interrupted, tmp_path)
    with pytest.raises(OutputDirError, match=r"another run \(training.learning_rate: 0.01 there, 0.02 here\)"):
        run_smile.main(tiny_argv(out, "--learning_rate", "0.02"))
    with pytest.raises(OutputDirError, match=r"training.seed: 42 there, 7 here.*--resume_from_checkpoint last"):
        run_smile.main(tiny_argv(out, "--seed", "7"))
    assert resumes == []  # nothing trained


def test_the_same_run_resumes_from_its_last_checkpoint(interrupted, tmp_path, resumes):
    out = copy_of(interrupted, tmp_path)
    result = run_smile.main(tiny_argv(out))
    assert resumes == [str(out / "checkpoint-3")] and result["global_step"] == 3


def test_resume_when_asked_even_with_other_arguments(interrupted, tmp_path, resumes):
    out = copy_of(interrupted, tmp_path)
    run_smile.main(tiny_argv(out, "--max_steps", "4", "--resume_from_checkpoint", "last"))
    assert resumes == [str(out / "checkpoint-3")]
    assert [step for step, _ in list_checkpoints(str(out))] == [1, 2, 3, 4]


def test_resume_paths_that_cannot_be_resumed(tmp_path, interrupted):
    with pytest.raises(IncompleteCheckpointError, match="--resume_from_checkpoint True: no complete checkpoint"):
        run_smile.main(tiny_argv(tmp_path / "empty", "--resume_from_checkpoint", "True"))
    out = copy_of(interrupted, tmp_path)
    os.remove(out / "checkpoint-2" / "checkpoint_complete.json")
    with pytest.raises(IncompleteCheckpointError, match="checkpoint-2: it has no checkpoint_complete.json"):
        run_smile.main(tiny_argv(out, "--resume_from_checkpoint", str(out / "checkpoint-2")))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "smiles"], "Unknown `method` 'smiles'"),
        (["--reg_lambda", "-1"], "`reg_lambda` must be >= 0"),
        (["--nan_policy", "ignore"], None),  # argparse's own choices error (exit 2)
    ],
)
def test_bad_arguments_are_input_errors(tmp_path, extra, message):
    if message is None:
        with pytest.raises(SystemExit) as exit_info:
            run_smile.parse_args(tiny_argv(tmp_path, *extra))
        assert exit_info.value.code == 2
        return
    with pytest.raises(run_smile.InputError, match=message):
        run_smile.parse_args(tiny_argv(tmp_path, *extra))


def test_model_folders_without_or_with_damaged_weights(tmp_path):
    bundled = REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny"
    no_weights = tmp_path / "no_weights"
    shutil.copytree(bundled, no_weights)
    os.remove(no_weights / "model.safetensors")
    with pytest.raises(run_smile.InputError, match="Cannot load the weights of --model_name_or_path .*no_weights"):
        run_smile.main(tiny_argv(tmp_path / "a", "--model_name_or_path", str(no_weights)))
    damaged = tmp_path / "damaged"
    shutil.copytree(bundled, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(run_smile.InputError, match="Cannot load the weights of --model_name_or_path .*damaged"):
        run_smile.main(tiny_argv(tmp_path / "b", "--model_name_or_path", str(damaged)))


def run_script(*argv) -> subprocess.CompletedProcess:
    env = subprocess_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "smile_hf.cli", "train", *argv], env=env, capture_output=True, text=True, timeout=300
    )


def test_script_reports_a_diverged_run_in_one_line_and_saves_nothing(tmp_path):
    out = tmp_path / "run"
    result = run_script(*tiny_argv(out, "--learning_rate", "1e6", "--max_steps", "30", "--optim", "sgd",
                                   "--save_steps", "5"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("smile-hf train: error:")]
    assert len(errors) == 1 and "Training diverged at step" in errors[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not (out / "results.json").exists() and not (out / "model.safetensors").exists()


def test_script_reports_bad_arguments_in_one_line(tmp_path):
    result = run_script(*tiny_argv(tmp_path, "--method", "smiles"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        "smile-hf train: error: Unknown `method` 'smiles'. Use a regulariser, a mixing strategy or 'regulariser+mixing' "
        "(regularisers: bss, cotuning, delta, delta_tllib, finetune, fixmatch, l2sp, mean_teacher, rifle, smile; mixing: mixup, cutmix, manifold_mixup)."
    ]
