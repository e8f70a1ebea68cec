"""Kill and resume at every phase of a run: the run script (SMILE on digits with the bundled ResNet checkpoint, a
checkpoint at every step, three kept), killed with SIGKILL at a named point (tests/kill_points.py) and run again with
the same command, ends with the final export and method state of the uninterrupted run, every tensor and buffer bit
for bit (BatchNorm's running statistics and `num_batches_tracked` included).

The run has 10 steps of 3 per epoch (the last step is inside an epoch), the learning rate multiplied by 0.1 from step
6 on (`lr_step_fraction` 0.5), the EMA teacher updated every 2 steps and the last 3 steps trained plainly
(`final_finetune_fraction` 0.3: steps 8 to 10).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from .testing_utils import REPO_ROOT, subprocess_env

ARGS = [
    "--dataset", "digits", "--train_samples_per_class", "4", "--max_eval_samples", "10", "--method", "smile",
    "--max_steps", "10", "--per_device_train_batch_size", "16", "--save_steps", "1", "--save_total_limit", "3",
    "--ema_update_every", "2", "--final_finetune_fraction", "0.3", "--lr_step_fraction", "0.5",
    "--lr_scheduler_type", "constant", "--report_to", "none", "--disable_tqdm", "True",
]  # fmt: skip
STEPS = 10

PHASES = {  # kill point -> the checkpoint the rerun resumes from
    "mid_step@3": 2,  # after the training forward pass of step 3, before its optimizer step
    "ema@4": 3,  # right after the EMA update of step 4, before checkpoint-4
    "lr_step@5": 4,  # right after the scheduler step that lowers the learning rate
    "mid_save@6": 5,  # checkpoint-6 has the student's weights, not the optimizer's state
    "before_method_state@6": 5,  # checkpoint-6 has the stock files, not method_state.safetensors
    "after_marker@7": 7,  # checkpoint-7 is complete, checkpoint-4 not deleted yet
    "mid_step@8": 7,  # the first step of the final plain fine-tuning
    "mid_step@10": 9,  # the last step
    "final_evaluate": STEPS,  # training is over: checkpoint-10 is complete, results.json not written
    "final_export": STEPS,  # the final model.safetensors is written, the rest of the folder not
}
"""The kill points, each with the checkpoint the rerun resumes from."""


def run_script(output_dir, kill_at: str | None = None, method_state_out=None) -> subprocess.CompletedProcess:
    variables = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if kill_at:
        variables["SMILE_HF_KILL_AT"] = kill_at
    if method_state_out:
        variables["SMILE_HF_METHOD_STATE_OUT"] = str(method_state_out)
    command = [sys.executable, "-m", "tests.kill_points", *ARGS, "--output_dir", str(output_dir)]
    return subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(**variables), capture_output=True, text=True)


def finished_run(output_dir, method_state_out) -> dict[str, object]:
    """Every tensor of the run's final export and final method state, and its results' step."""
    state = {f"export.{k}": v for k, v in safetensors.torch.load_file(str(output_dir / "model.safetensors")).items()}
    state.update({f"method.{k}": v for k, v in safetensors.torch.load_file(str(method_state_out)).items()})
    with open(output_dir / "results.json", encoding="utf-8") as f:
        state["global_step"] = json.load(f)["runs"][0]["global_step"]
    return state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = run_script(folder / "run", method_state_out=folder / "method_state.safetensors")
    assert done.returncode == 0, done.stderr[-3000:]
    return finished_run(folder / "run", folder / "method_state.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", list(PHASES))
def test_a_run_killed_at_any_phase_resumes_exactly(uninterrupted, tmp_path, kill_at):
    killed = run_script(tmp_path / "run", kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]  # the kill point was reached
    resumed = run_script(tmp_path / "run", method_state_out=tmp_path / "method_state.safetensors")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {tmp_path / 'run' / f'checkpoint-{PHASES[kill_at]}'}" in resumed.stderr
    got = finished_run(tmp_path / "run", tmp_path / "method_state.safetensors")
    assert got["global_step"] == uninterrupted["global_step"] == STEPS
    assert got.keys() == uninterrupted.keys()
    assert any(k.endswith("num_batches_tracked") for k in got)  # the BatchNorm counters are compared too
    different = [k for k, v in uninterrupted.items() if k != "global_step" and not torch.equal(v, got[k])]
    assert not different, f"{len(different)} tensors differ after a kill at {kill_at}, e.g. {different[:3]}"


CHAIN = ("mid_step@3", "ema@4", "lr_step@5", "before_method_state@6", "after_marker@7", "mid_step@8", "final_export")
"""Kill points of one run killed again and again (each after the checkpoint the previous rerun resumes from)."""


@pytest.mark.slow
def test_a_run_killed_again_and_again_resumes_exactly(uninterrupted, tmp_path):
    previous = None  # a fresh start
    for kill_at in CHAIN:
        killed = run_script(tmp_path / "run", kill_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        if previous is not None:
            assert f"Resuming from {tmp_path / 'run' / f'checkpoint-{previous}'}" in killed.stderr
        previous = PHASES[kill_at]
    resumed = run_script(tmp_path / "run", method_state_out=tmp_path / "method_state.safetensors")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {tmp_path / 'run' / f'checkpoint-{previous}'}" in resumed.stderr
    got = finished_run(tmp_path / "run", tmp_path / "method_state.safetensors")
    assert got.keys() == uninterrupted.keys() and got["global_step"] == STEPS
    different = [k for k, v in uninterrupted.items() if k != "global_step" and not torch.equal(v, got[k])]
    assert not different, f"{len(different)} tensors differ after the kills {CHAIN}, e.g. {different[:3]}"
