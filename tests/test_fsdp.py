"""FSDP2 (`fully_shard`) full fine-tuning on the CPU: two processes (torchrun, gloo) shard the student and the
teacher with smile_hf.fsdp and train with `TransferLoss` in a plain loop (tests/fsdp_rank.py), for SMILE and L2-SP.

Second code path: the same loop in this process, unsharded, each step's two halves run as two micro-batches of
weight 1/2 before one optimizer step. The tiny ViT has no BatchNorm and no dropout, so each half's loss is the same in
both paths, and FSDP2's average of the two ranks' gradients is the reference's accumulated gradient; the sums over
parameters (L2-SP's distance, the head penalties) are all-reduced on the shards, their gradient reaching each rank's
shards alone. The only difference is the order of float32 additions (all-reduce and reduce-scatter against
accumulation): losses agree to rtol 1e-5, weights to atol 1e-6 after 4 SGD steps (measured on this machine: at
most 2e-7 relative on the losses, 2e-8 on the weights). A run stopped after 2 steps (its sharded checkpoint saved,
the processes ended with no clean-up) and resumed in new processes ends bit for bit where the uninterrupted run
ends.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.checkpoints import COMPLETE_MARKER_NAME, IncompleteCheckpointError
from smile_hf.fsdp import SHARDED_MARKER_NAME, SHARDING_FIELD, check_checkpoint_sharding, checkpoint_sharding
from smile_hf.sharding import (
    FSDP1_ERROR,
    FSDP2_LORA_ERROR,
    FSDP2_METHOD_ERROR,
    FSDP_CPU_ERROR,
    check_fsdp,
    check_sharding,
    fsdp_version,
)

from .fsdp_rank import METHODS, STEPS, STOP, Run
from .testing_utils import clone, random_image_dataset, source_and_student, subprocess_env, training_device_args

SCRIPT = Path(__file__).resolve().parent / "fsdp_rank.py"
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, phase: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(SCRIPT), str(out), phase]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", SMILE_HF_TEST_DEVICE="cpu")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    _launch(out, "train")
    _launch(out, "resume")
    return out


def _report(out: Path, name: str, rank: int) -> dict:
    return json.loads((out / f"{name}.rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def references() -> dict:
    """The single-process run of each method: per-rank losses of every step, and the final state."""
    results = {}
    for method in METHODS:
        run = Run(method, sharded=False)
        losses = {0: [], 1: []}
        for step in range(STEPS):
            for rank in (0, 1):
                losses[rank].append(run.micro_batch(step, rank, 0.5))
            run.end_step(step)
        results[method] = (losses, run.full_state(), run.teacher)
    return results


@pytest.mark.parametrize("method", list(METHODS))
def test_sharded_training_equals_single_process(fsdp_runs, references, method):
    losses, state, _ = references[method]
    for rank in (0, 1):
        sharded = _report(fsdp_runs, f"{method}_full", rank)["losses"]
        assert [s.keys() for s in sharded] == [r.keys() for r in losses[rank]]
        for step, (got, want) in enumerate(zip(sharded, losses[rank])):
            for term in want:
                assert got[term] == pytest.approx(want[term], rel=LOSS_RTOL), (rank, step, term)
    sharded_state = load_file(str(fsdp_runs / f"{method}_full.safetensors"))
    assert sharded_state.keys() == state.keys()
    for key, want in state.items():
        torch.testing.assert_close(sharded_state[key], want, rtol=0, atol=WEIGHT_ATOL, msg=key)
    initial = Run(method, sharded=False).full_state()  # training moved the student (and SMILE's teacher)
    moved = [
        k for k in state if k.startswith(("student.", "teacher.model.vit.")) and not torch.equal(state[k], initial[k])
    ]
    assert any(k.startswith("student.") for k in moved)
    assert method != "smile" or any(k.startswith("teacher.") for k in moved)


def test_teacher_memory_is_half(fsdp_runs, references):
    """Each rank holds the dim-0 chunk of every teacher parameter (`torch.chunk` into 2), buffers whole: counted by
    hand from the unsharded teacher's shapes, half of its parameter bytes up to the odd rows."""
    teacher = references["smile"][2].model
    expected = {0: 0, 1: 0}
    for p in teacher.parameters():
        rows = p.shape[0] if p.dim() else 1
        first = math.ceil(rows / 2)
        row_bytes = p.numel() // max(rows, 1) * 4  # float32 shadow
        expected[0] += first * row_bytes
        expected[1] += (rows - first) * row_bytes
    buffers = sum(b.numel() * b.element_size() for b in teacher.buffers())
    unsharded = sum(p.numel() * 4 for p in teacher.parameters())
    for rank in (0, 1):
        local = _report(fsdp_runs, "smile_full", rank)["teacher_local_bytes"]
        assert local == expected[rank] + buffers
        assert abs(local - buffers - unsharded / 2) <= 0.01 * unsharded  # half, to 1 % (odd numbers of rows)


def test_ema_towards_a_student_sharded_otherwise_is_refused(fsdp_runs):
    for rank in (0, 1):
        error = _report(fsdp_runs, "smile_full", rank)["unsharded_student_error"]
        assert error.startswith("Tensor 0 is sharded as (Shard(dim=0),)") and "shard_teacher" in error


@pytest.mark.parametrize("method", list(METHODS))
def test_killed_and_resumed_run_is_exact(fsdp_runs, method):
    full = load_file(str(fsdp_runs / f"{method}_full.safetensors"))
    resumed = load_file(str(fsdp_runs / f"{method}_resumed.safetensors"))
    assert resumed.keys() == full.keys()
    for key in full:
        assert torch.equal(resumed[key], full[key]), key
    for rank in (0, 1):
        report = _report(fsdp_runs, f"{method}_resumed", rank)
        assert report["step"] == STOP
        assert report["trainer_method_state_equal"]  # SmileTrainer's sharded method state: saved, loaded, the same
        assert report["losses"] == _report(fsdp_runs, f"{method}_full", rank)["losses"][STOP:]


def test_checkpoint_of_the_other_setting_is_refused(fsdp_runs, tmp_path):
    sharded = fsdp_runs / "checkpoint-smile"
    assert checkpoint_sharding(str(sharded)) == "fsdp2"
    trainer_written = fsdp_runs / "checkpoint-smile-trainer"  # SmileTrainer's marker fields under FSDP2
    marker = json.loads((trainer_written / COMPLETE_MARKER_NAME).read_text())
    assert marker[SHARDING_FIELD] == "fsdp2" and marker["method"] == "smile"
    assert (trainer_written / "sharded_state").is_dir() and not (trainer_written / "method_state.safetensors").exists()
    check_checkpoint_sharding(str(sharded), sharded=True)
    with pytest.raises(IncompleteCheckpointError, match="written under FSDP2") as error:
        check_checkpoint_sharding(str(sharded), sharded=False)
    assert "\n" not in str(error.value)
    ddp = tmp_path / "checkpoint-4"  # a Trainer checkpoint written without FSDP: its marker names no sharding
    ddp.mkdir()
    (ddp / COMPLETE_MARKER_NAME).write_text(json.dumps({"format": "smile_hf.checkpoint", "global_step": 4}))
    check_checkpoint_sharding(str(ddp), sharded=False)
    with pytest.raises(IncompleteCheckpointError, match="not a complete FSDP2 checkpoint"):
        check_checkpoint_sharding(str(ddp), sharded=True)
    interrupted = tmp_path / "interrupted"  # the sharded files without the marker written last
    shutil.copytree(sharded, interrupted)
    (interrupted / SHARDED_MARKER_NAME).unlink()
    with pytest.raises(IncompleteCheckpointError, match="not a complete FSDP2 checkpoint"):
        check_checkpoint_sharding(str(interrupted), sharded=True)


# ---- SmileTrainer's FSDP refusals and checkpoint settings (the FSDP2 path itself runs in scripts/gpu_checks.sh) ----


def test_fsdp_forms_smile_trainer_does_not_train_are_refused(tmp_path, monkeypatch):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(), fsdp=True,
                                  fsdp_config={"version": 1})  # fmt: skip
    with pytest.raises(ValueError) as error:
        SmileTrainer(model=student, args=args, teacher_model=source)
    assert str(error.value) == FSDP1_ERROR.format(version=1)
    # FSDP2 is trained on accelerators only: on the CPU, the Trainer's `fsdp=` path silently trains with DDP
    cpu = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, fsdp=True)
    with pytest.raises(ValueError) as error:
        check_sharding(cpu)
    assert str(error.value) == FSDP_CPU_ERROR
    delta = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", fsdp=True, method="delta")
    with pytest.raises(ValueError) as error:  # a method whose state is not sharded-aware, refused before the device
        check_sharding(delta)
    assert str(error.value) == FSDP2_METHOD_ERROR.format(method="delta")
    assert "finetune, l2sp, smile" in str(error.value)
    fsdp2 = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", fsdp=True, method="l2sp")
    with pytest.raises(ValueError) as error:
        check_fsdp(fsdp2, peft_config=object())  # a LoRA student
    assert str(error.value) == FSDP2_LORA_ERROR
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # `accelerate launch --use_fsdp` without --fsdp_version 2
    plain = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args())
    with pytest.raises(ValueError, match="FSDP2 only, not FSDP1"):
        check_sharding(plain)
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert fsdp_version(plain) == 2
    for message in (FSDP1_ERROR, FSDP_CPU_ERROR, FSDP2_METHOD_ERROR, FSDP2_LORA_ERROR):
        assert "\n" not in message


def test_fsdp2_checkpoint_is_refused_without_fsdp(tmp_path):
    """A Trainer checkpoint whose marker says it was written under FSDP2 is not resumed by a DDP / single-process
    SmileTrainer (the other direction, a DDP checkpoint under FSDP2, is refused by the same check: see above)."""
    source, student = source_and_student("resnet")

    def trainer(max_steps):
        args = SmileTrainingArguments(
            output_dir=str(tmp_path), report_to="none", **training_device_args(), method="l2sp", max_steps=max_steps,
            per_device_train_batch_size=4, save_steps=1, disable_tqdm=True,
        )  # fmt: skip
        return SmileTrainer(model=clone(student), args=args, teacher_model=clone(source),
                            train_dataset=random_image_dataset(8))  # fmt: skip

    trainer(1).train()
    checkpoint = tmp_path / "checkpoint-1"
    marker = json.loads((checkpoint / COMPLETE_MARKER_NAME).read_text())
    (checkpoint / COMPLETE_MARKER_NAME).write_text(json.dumps({**marker, SHARDING_FIELD: "fsdp2"}))
    with pytest.raises(IncompleteCheckpointError, match="without FSDP: it was written under FSDP2") as error:
        trainer(2).train(resume_from_checkpoint=str(checkpoint))
    assert "\n" not in str(error.value)
