"""examples/run_smile.py, the script on the public API, against `smile-hf train`, the full driver: the same arguments
train the same model (the same final weights, bit for bit, and the same evaluation metrics), the preset's recipe
included; the example resumes from the last checkpoint of its output folder, and refuses the driver's options in one
line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smile_hf import cli

from .testing_utils import script_device_args, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "run_smile.py"
NOT_RESULTS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")  # timings, not results

# digits with its preset recipe (the reference optimisation: SGD Nesterov, lr 0.01, batch 48, one lr step), few
# steps; the method with a teacher, mixup and the source model's head (SMILE)
ARGV = [
    "--dataset", "digits", "--method", "smile", "--train_samples_per_class", "4", "--max_eval_samples", "60",
    "--max_steps", "4", "--per_device_train_batch_size", "16", "--report_to", "none", "--disable_tqdm", "True",
    *script_device_args(),
]  # fmt: skip


def load_example():
    spec = importlib.util.spec_from_file_location("run_smile_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in NOT_RESULTS}


@pytest.mark.auto_device("both scripts pick the device as a user runs them; the comparison is between the two runs")
def test_the_example_and_smile_hf_train_give_the_same_model(tmp_path):
    example = load_example().main([*ARGV, "--output_dir", str(tmp_path / "example")])
    cli.main(["train", *ARGV, "--output_dir", str(tmp_path / "driver")])
    driver = json.loads((tmp_path / "driver" / "results.json").read_text())["runs"][0]["metrics"]
    assert results(example) == results(driver)
    ours, theirs = (load_file(tmp_path / name / "model.safetensors") for name in ("example", "driver"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    start = load_file(REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny" / "model.safetensors")
    assert any(not torch.equal(ours[name], start[name]) for name in ours if name in start)  # it did train
    # the recipe of the preset, recorded in the card of both
    card = (tmp_path / "example" / "README.md").read_text()
    assert "Trained with the recipe of the `digits` preset" in card
    assert json.loads((tmp_path / "example" / "train_results.json").read_text())["epoch"] > 0


def test_the_example_resumes_from_the_last_checkpoint(tmp_path, caplog):
    example = load_example()
    argv = [*ARGV, "--method", "finetune", "--save_steps", "2", "--output_dir", str(tmp_path)]
    first = example.main(argv)
    resumed = example.main([*argv, "--max_steps", "6"])
    assert f"Resuming from {tmp_path / 'checkpoint-4'}" in caplog.text
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and first["epoch"] < resumed["epoch"]


def test_the_example_refuses_what_only_the_driver_does(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *ARGV, "--hp_search_trials", "2", "--output_dir", str(tmp_path)],
        env=subprocess_env(HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "run_smile.py: error: --hp_search_trials: use `smile-hf train`, which has them."
    )
    assert not (tmp_path / "runs").exists() and not any(tmp_path.iterdir())
