"""Checkpoints: exact resume of every piece of SMILE state, and interrupted saves that are never resumed from."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import logging

import pytest
import safetensors.torch
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint as stock_get_last_checkpoint

import smile_hf.checkpoints as ckpt
from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.method_state import METHOD_STATE_NAME
from smile_hf.methods import REGULARIZERS, Regularizer, register_regularizer

from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .testing_utils import (
    random_image_dataset,
    requires_a_device_per_rank,
    source_and_student,
    training_device_args,
)

N = 3  # steps before the interruption; the runs train 2N steps in all
STATEFUL_METHOD = "running_center_test"


class RunningCenter(Regularizer):
    """A test method whose state changes at every step: an EMA of the batch's mean pooled feature, which the loss
    pulls the features towards. A resume that did not restore it would train differently afterwards."""

    name = STATEFUL_METHOD

    def __init__(self, args):
        super().__init__(args)
        self.center = None

    def setup(self, trainer):
        self.center = torch.zeros(trainer.adapter.head(trainer.model).in_features)

    def loss_terms(self, inputs):
        pooled = inputs.student.pooled.float()
        term = (pooled - self.center.to(pooled.device)).pow(2).mean()
        self.center = 0.7 * self.center + 0.3 * pooled.detach().mean(0).cpu()
        return {"center": (0.1, term)}

    def state_dict(self):
        return {"center": self.center}

    def load_state_dict(self, state):
        self.center = state["center"].clone()


@pytest.fixture(scope="module", autouse=True)
def running_center_method():
    register_regularizer(RunningCenter)
    yield
    REGULARIZERS.pop(STATEFUL_METHOD, None)


# every stateful method present (the baselines are added as they land), plus one mixing strategy
RESUME_METHODS = ["smile", STATEFUL_METHOD, "finetune+cutmix"]
RESUME_METHODS += [m for m in ("l2sp", "delta", "cotuning", "rifle", "bss") if m in REGULARIZERS]


class StopAt(TrainerCallback):
    """Stops training after optimizer step `step`, as an interruption would (the checkpoint of that step is saved)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def make_trainer(output_dir, method, seed=0, callbacks=(), **kwargs):
    """A deterministic tiny run: ResNet, SGD, 16 images in batches of 4 (an epoch boundary after step 4)."""
    source, student = source_and_student("resnet", seed=seed)
    options = dict(
        output_dir=str(output_dir), report_to="none", **training_device_args(), method=method, max_steps=2 * N,
        per_device_train_batch_size=4, optim="sgd", learning_rate=0.05, lr_scheduler_type="linear", logging_steps=1,
        seed=42, save_strategy="no", ema_decay=0.8, ema_update_every=2, final_finetune_fraction=1 / 3,
        disable_tqdm=True,
    )  # fmt: skip
    options.update(kwargs)
    args = SmileTrainingArguments(**options)
    return SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(16), callbacks=list(callbacks)
    )


def full_state(trainer):
    """Everything that must match: the student (source head included), teacher, EMA counter, method state."""
    state = {f"student.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state.update({f"smile.{k}": v for k, v in trainer.method_state_dict().items()})
    return state


def train_losses(trainer, first_step):
    """(step, name) -> value of every loss logged from `first_step` on."""
    return {
        (entry["step"], k): v
        for entry in trainer.state.log_history
        if "loss" in entry and entry["step"] >= first_step
        for k, v in entry.items()
        if k == "loss" or k.startswith("loss_")
    }


def assert_states_close(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("method", RESUME_METHODS)
def test_resume_gives_the_same_run_as_training_in_one_go(tmp_path, method, monkeypatch):
    reference = make_trainer(tmp_path / "one_go", method)
    reference.train()
    expected = full_state(reference)

    interrupted = make_trainer(tmp_path / "run", method, save_strategy="steps", save_steps=N, callbacks=[StopAt(N)])
    interrupted.train()
    assert interrupted.state.global_step == N
    checkpoint = tmp_path / "run" / f"checkpoint-{N}"
    assert ckpt.is_complete_checkpoint(str(checkpoint))

    # A new process would start from freshly loaded models: here even differently initialised ones, so that every
    # value after the resume has to come from the checkpoint.
    resumed = make_trainer(tmp_path / "run", method, seed=5, save_strategy="steps", save_steps=N)
    saved = safetensors.torch.load_file(str(checkpoint / METHOD_STATE_NAME))
    if resumed.teacher is not None:
        assert not torch.equal(resumed.method_state_dict()["teacher.model.classifier.1.weight"],
                               saved["teacher.model.classifier.1.weight"])  # fmt: skip
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    resumed.train(resume_from_checkpoint=True)

    assert resumed.state.global_step == 2 * N
    assert_states_close(full_state(resumed), expected)
    expected_losses = train_losses(reference, N + 1)
    assert len(expected_losses) >= N and train_losses(resumed, N + 1) == pytest.approx(expected_losses, rel=1e-5, abs=1e-6)
    if method == "smile":
        # EMA after steps 2 and 4; none after step 6, which is in the final plain phase (steps 5, 6)
        assert resumed.teacher.num_updates == reference.teacher.num_updates == 2
        assert int(saved["teacher.num_updates"]) == 1
    assert loads and all(w is True for w in loads), "a checkpoint file was unpickled without weights_only=True"


def test_a_checkpoint_with_the_former_state_file_name_resumes_the_same_run(tmp_path):
    """A checkpoint written when the method state was `smile_state.safetensors` (its completion marker lists that
    name) resumes exactly: student, teacher, EMA counter, source head and losses as training in one go."""
    reference = make_trainer(tmp_path / "one_go", "smile")
    reference.train()
    interrupted = make_trainer(tmp_path / "run", "smile", save_strategy="steps", save_steps=N, callbacks=[StopAt(N)])
    interrupted.train()
    checkpoint = tmp_path / "run" / f"checkpoint-{N}"
    (checkpoint / METHOD_STATE_NAME).rename(checkpoint / "smile_state.safetensors")
    marker_path = checkpoint / ckpt.COMPLETE_MARKER_NAME
    marker = json.loads(marker_path.read_text())
    marker["files"]["smile_state.safetensors"] = marker["files"].pop(METHOD_STATE_NAME)
    marker_path.write_text(json.dumps(marker))
    assert ckpt.is_complete_checkpoint(str(checkpoint)) and not (checkpoint / METHOD_STATE_NAME).exists()

    resumed = make_trainer(tmp_path / "run", "smile", seed=5, save_strategy="steps", save_steps=N)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 2 * N and resumed.teacher.num_updates == reference.teacher.num_updates
    assert_states_close(full_state(resumed), full_state(reference))
    expected_losses = train_losses(reference, N + 1)
    assert len(expected_losses) >= N and train_losses(resumed, N + 1) == pytest.approx(expected_losses, rel=1e-5, abs=1e-6)
    assert (tmp_path / "run" / f"checkpoint-{2 * N}" / METHOD_STATE_NAME).is_file()  # new checkpoints: the new name


def test_checkpoint_files_are_safetensors_and_complete(tmp_path):
    trainer = make_trainer(tmp_path, "smile", max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    folder = tmp_path / "checkpoint-2"
    marker = json.loads((folder / ckpt.COMPLETE_MARKER_NAME).read_text())
    assert marker["global_step"] == 2 and marker["method"] == "smile"
    on_disk = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in folder.rglob("*")
        if p.is_file()
    }
    assert marker["files"] == {k: v for k, v in on_disk.items() if k != ckpt.COMPLETE_MARKER_NAME}
    state = safetensors.torch.load_file(str(folder / METHOD_STATE_NAME))
    expected = trainer.method_state_dict()
    assert_states_close(state, expected)
    assert any(k.startswith("source_head.") for k in state) and "teacher.num_updates" in state
    weights = safetensors.torch.load_file(str(folder / "model.safetensors"))
    assert not any(k.startswith("smile_source_head.") for k in weights)
    assert json.loads((folder / "training_args.json").read_text())["method"] == "smile"


class Crash(RuntimeError):
    pass


def test_interrupted_save_is_never_resumed_from(tmp_path, monkeypatch, caplog):
    # The save of checkpoint-4 dies after the stock files and the SMILE state, before the completion marker.
    real_marker = ckpt.write_completion_marker

    def dying_marker(folder, step, **kwargs):
        if step == 4:
            raise Crash("killed while saving")
        return real_marker(folder, step, **kwargs)

    monkeypatch.setattr(ckpt, "write_completion_marker", dying_marker)
    trainer = make_trainer(tmp_path, "smile", max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=1)
    with pytest.raises(Crash):
        trainer.train()
    monkeypatch.setattr(ckpt, "write_completion_marker", real_marker)
    partial, last_good = str(tmp_path / "checkpoint-4"), str(tmp_path / "checkpoint-2")
    assert os.path.isfile(os.path.join(partial, "model.safetensors"))  # it looks like a checkpoint...
    assert stock_get_last_checkpoint(str(tmp_path)) == partial  # ...and transformers would resume from it
    # save_total_limit=1 must not have deleted the last complete checkpoint for the incomplete one
    assert os.path.isdir(last_good)

    with caplog.at_level(logging.WARNING, logger="smile_hf.checkpoints"):
        assert ckpt.get_last_checkpoint(str(tmp_path)) == last_good
    assert "checkpoint-4" in caplog.text and ckpt.COMPLETE_MARKER_NAME in caplog.text
    assert ckpt.incomplete_checkpoints(str(tmp_path)) == [partial]

    resumed = make_trainer(tmp_path, "smile", max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=1)
    with pytest.raises(ckpt.IncompleteCheckpointError, match="checkpoint_complete.json"):
        resumed.train(resume_from_checkpoint=partial)
    seen, load = [], SmileTrainer._load_from_checkpoint
    monkeypatch.setattr(SmileTrainer, "_load_from_checkpoint", lambda self, path, model=None: seen.append(path) or
                        load(self, path, model))  # fmt: skip
    resumed.train(resume_from_checkpoint=True)
    assert seen == [last_good]
    # the partial folder was replaced by a whole checkpoint-4, and rotation then kept only the last one
    assert ckpt.list_checkpoints(str(tmp_path)) == [(6, str(tmp_path / "checkpoint-6"))]
    assert ckpt.is_complete_checkpoint(str(tmp_path / "checkpoint-6"))


def test_damaged_or_missing_files_are_reported(tmp_path):
    trainer = make_trainer(tmp_path, "smile", max_steps=2, save_strategy="steps", save_steps=1)
    trainer.train()
    first, second = tmp_path / "checkpoint-1", tmp_path / "checkpoint-2"
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "model.safetensors has 100 bytes" in ckpt.checkpoint_problem(str(second))
    assert ckpt.get_last_checkpoint(str(tmp_path)) == str(first)
    os.remove(first / METHOD_STATE_NAME)
    assert ckpt.checkpoint_problem(str(first)) == f"{METHOD_STATE_NAME} is missing"
    assert ckpt.get_last_checkpoint(str(tmp_path)) is None
    with pytest.raises(ValueError, match="No complete checkpoint.*checkpoint-1.*checkpoint-2"):
        make_trainer(tmp_path, "smile").train(resume_from_checkpoint=True)


def overwrite_same_size(path, offset: int = 0) -> None:
    """Replace bytes of `path` from `offset` on by garbage, keeping its size (what a size check cannot see)."""
    data = bytearray(path.read_bytes())
    garbage = bytes((b + 97) % 256 for b in data[offset : offset + 4096])
    data[offset : offset + len(garbage)] = garbage
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", ["model.safetensors", METHOD_STATE_NAME])
def test_same_size_damage_is_found_and_the_previous_checkpoint_used(tmp_path, damaged, caplog, monkeypatch):
    trainer = make_trainer(tmp_path, "smile", max_steps=2, save_strategy="steps", save_steps=1)
    trainer.train()
    first, second = tmp_path / "checkpoint-1", tmp_path / "checkpoint-2"
    size = (second / damaged).stat().st_size
    overwrite_same_size(second / damaged, offset=0 if damaged == METHOD_STATE_NAME else size // 2)  # header / body
    assert (second / damaged).stat().st_size == size
    assert ckpt.checkpoint_problem(str(second)) == (
        f"{damaged} is damaged (its content does not match the SHA-256 recorded when it was saved)"
    )
    with caplog.at_level(logging.WARNING, logger="smile_hf.checkpoints"):
        assert ckpt.get_last_checkpoint(str(tmp_path)) == str(first)
    assert f"{damaged} is damaged" in caplog.text and "checkpoint-2" in caplog.text

    resumed = make_trainer(tmp_path, "smile", max_steps=2, save_strategy="no")
    with pytest.raises(ckpt.IncompleteCheckpointError, match=f"Cannot resume from .*checkpoint-2: {damaged} is damaged"):
        resumed.train(resume_from_checkpoint=str(second))
    seen, load = [], SmileTrainer._load_from_checkpoint
    monkeypatch.setattr(SmileTrainer, "_load_from_checkpoint", lambda self, path, model=None: seen.append(path) or
                        load(self, path, model))  # fmt: skip
    resumed.train(resume_from_checkpoint=True)
    assert seen == [str(first)]


def test_markers_of_the_size_only_format_are_still_read(tmp_path):
    trainer = make_trainer(tmp_path, "smile", max_steps=1, save_strategy="steps", save_steps=1)
    trainer.train()
    folder = tmp_path / "checkpoint-1"
    marker_path = folder / ckpt.COMPLETE_MARKER_NAME
    marker = json.loads(marker_path.read_text())
    marker["version"], marker["files"] = 1, {rel: entry["size"] for rel, entry in marker["files"].items()}
    marker_path.write_text(json.dumps(marker))
    assert ckpt.is_complete_checkpoint(str(folder))
    (folder / "model.safetensors").write_bytes(b"x")
    assert "model.safetensors has 1 bytes" in ckpt.checkpoint_problem(str(folder))


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    # CPU tensors: the trainer copies its state to the CPU before writing it (a file test, whatever the device)
    path = str(tmp_path / "state.safetensors")
    ckpt.save_safetensors_atomic({"a": torch.ones(3)}, path)

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 10)
        raise Crash("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(Crash):
        ckpt.save_safetensors_atomic({"a": torch.zeros(3)}, path)
    assert os.listdir(tmp_path) == ["state.safetensors"]  # no temporary file left, the old file untouched
    monkeypatch.undo()
    torch.testing.assert_close(safetensors.torch.load_file(path)["a"], torch.ones(3))


def test_resuming_with_another_method_is_refused(tmp_path):
    make_trainer(tmp_path, "smile", max_steps=1, save_strategy="steps", save_steps=1).train()
    other = make_trainer(tmp_path, STATEFUL_METHOD, max_steps=2)
    with pytest.raises(ValueError, match="written by method 'smile'"):
        other.train(resume_from_checkpoint=True)


DDP_SCRIPT = """
import os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from tests.testing_utils import finish_rank, random_image_dataset, source_and_student, training_device_args
from smile_hf import SmileTrainer, SmileTrainingArguments
output_dir, max_steps, resume = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume"
source, student = source_and_student("resnet", device="cpu")  # the Trainer puts them on this rank's device
args = SmileTrainingArguments(
    output_dir=output_dir, report_to="none", **training_device_args(), method="smile", max_steps=max_steps, disable_tqdm=True,
    per_device_train_batch_size=2, save_strategy="steps", save_steps=1, save_total_limit=1, ema_update_every=1,
    ddp_find_unused_parameters=False,  # the source head's output is not among the model's outputs
)
trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
trainer.train(resume_from_checkpoint=resume or None)
print(f"rank {args.process_index} of {args.world_size} at step {trainer.state.global_step}", flush=True)
finish_rank()
"""


@pytest.mark.slow
@requires_a_device_per_rank(2)
def test_two_process_checkpoints_are_complete_and_resume(tmp_path):
    """Under DDP the marker is written after every rank's files (each rank saves its own RNG state)."""
    import subprocess
    import sys

    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for steps, mode in ((2, "fresh"), (3, "resume")):
        run = subprocess.run([*torchrun, str(script), repo, str(tmp_path / "out"), str(steps), mode],
                             capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        for rank in (0, 1):
            assert f"rank {rank} of 2 at step {steps}" in run.stdout
        assert ckpt.list_checkpoints(str(tmp_path / "out")) == [(steps, str(tmp_path / "out" / f"checkpoint-{steps}"))]
        marker = json.loads((tmp_path / "out" / f"checkpoint-{steps}" / ckpt.COMPLETE_MARKER_NAME).read_text())
        assert {"rng_state_0.pth", "rng_state_1.pth", METHOD_STATE_NAME} <= set(marker["files"])
        assert ckpt.is_complete_checkpoint(str(tmp_path / "out" / f"checkpoint-{steps}"))
