"""A real two-process run of examples/run_smile.py (torchrun; on the CPU with gloo, on an accelerator one device per
rank, skipped with fewer than two): both ranks see world size 2, evaluation is gathered over the whole eval set, and
student, auxiliary head and EMA teacher are identical on both ranks at the end (and the teacher did move away from
the source checkpoint). The run goes through tests/ddp_rank_states.py, which runs the script's functions and then
writes each rank's weights."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smile_hf.backbones import SOURCE_HEAD_NAME

from .testing_utils import TEST_DEVICE, requires_a_device_per_rank, script_device_args, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "tests" / "ddp_rank_states.py"  # examples/run_smile.py, then each rank's weights
SOURCE = REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny"
NUM_EVAL = 40

pytestmark = requires_a_device_per_rank(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(SCRIPT),
        "--dataset", "digits", "--train_samples_per_class", "4", "--max_eval_samples", str(NUM_EVAL),
        "--method", "smile", "--max_steps", "6", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
        "--ema_update_every", "1", "--ema_decay", "0.5", "--final_finetune_fraction", "0.34", "--learning_rate", "0.05",
        "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True",
        "--output_dir", str(output_dir), *script_device_args(),
        "--ddp_backend", "nccl" if TEST_DEVICE.startswith("cuda") else "gloo",  # a stock field, honoured as such
    ]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, timeout=300, cwd=str(output_dir)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir, result


def test_each_rank_sees_world_size_two(two_process_run):
    output_dir, _ = two_process_run
    reports = [json.loads((output_dir / "rank_states" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports == [{"rank": 0, "world_size": 2}, {"rank": 1, "world_size": 2}]


def test_student_aux_head_and_teacher_identical_across_ranks(two_process_run):
    output_dir, _ = two_process_run
    rank0, rank1 = (load_file(str(output_dir / "rank_states" / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert any(k.startswith(f"student.{SOURCE_HEAD_NAME}.") for k in rank0), "the auxiliary head is not on the model"
    assert any(k.startswith("teacher.") for k in rank0)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=f"{key} differs across ranks")
    # the EMA did run: the teacher's backbone left the source weights, its head (never updated) did not
    source = load_file(str(SOURCE / "model.safetensors"))
    moved = [k for k in source if k.startswith("resnet.") and not torch.equal(source[k], rank0[f"teacher.{k}"])]
    assert moved, "the teacher never moved: the EMA did not run"
    torch.testing.assert_close(rank0["teacher.classifier.1.weight"], source["classifier.1.weight"], rtol=0, atol=0)


def test_evaluation_is_gathered_across_processes(two_process_run):
    output_dir, result = two_process_run
    results = json.loads((output_dir / "results.json").read_text())
    (run,) = results["runs"]
    assert run["world_size"] == 2 and run["global_step"] == 6  # 4 SMILE steps, then 2 plain (final phase)
    assert run["metrics"]["eval_num_samples"] == NUM_EVAL  # both halves, not one rank's
    assert "| seed | smile top-1 (%) |" in result.stdout


GUARD_SCRIPT = REPO_ROOT / "tests" / "ddp_guard_rank.py"


def run_guard(tmp_path, policy: str):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(GUARD_SCRIPT), str(tmp_path), policy]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    return reports, weights


def test_the_guard_decides_for_all_processes(tmp_path):
    """Only rank 1 sees NaN images (its third batch). With `skip_step` both ranks skip step 3 and stay identical and
    finite; with `stop` both stop at the same logging step (4), naming step 3: rank 0 never saw a NaN itself."""
    reports, weights = run_guard(tmp_path / "skip", "skip_step")
    assert [r["skipped_steps"] for r in reports] == [[3], [3]] and [r["global_step"] for r in reports] == [6, 6]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0, msg=key)
        assert torch.isfinite(weights[0][key].float()).all(), key
    reports, _ = run_guard(tmp_path / "stop", "stop")
    assert [r["global_step"] for r in reports] == [4, 4]
    assert all("Training diverged at step 3:" in r["error"] for r in reports)
    assert "the terms of another process not finite" in reports[0]["error"]
    assert "loss_main=nan" in reports[1]["error"] and "last finite values (step 2)" in reports[1]["error"]
