"""Checkpoints whose content is whole (the completion marker's hashes match) but whose state is not the one this
trainer wrote: a method state of another layout, a malformed `trainer_state.json`, steps that disagree. Each is
refused in one `IncompleteCheckpointError` line naming the checkpoint, the file and the key or field, and a plain
rerun (`resume_from_checkpoint=True`) skips a checkpoint whose step or `trainer_state.json` is wrong, as it skips a
damaged one."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import logging
import shutil

import pytest
import safetensors.torch
import torch

import smile_hf.checkpoints as ckpt
from smile_hf import SmileTrainer
from smile_hf import cli as smile_cli
from smile_hf.method_state import METHOD_STATE_NAME

from .test_checkpoints import make_trainer
from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .test_run_reliability import copy_of, interrupted, run_script, tiny_argv  # noqa: F401  (interrupted: a fixture)

TRAINER_STATE = "trainer_state.json"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A SMILE run of 2 steps with a checkpoint after each (teacher, source head and EMA counter in its state)."""
    out = tmp_path_factory.mktemp("saved") / "run"
    make_trainer(out, "smile", max_steps=2, save_strategy="steps", save_steps=1).train()
    return out


@pytest.fixture
def run_dir(saved_run, tmp_path):
    shutil.copytree(saved_run, tmp_path / "run")
    return tmp_path / "run"


def rewrite_marker(checkpoint) -> None:
    """Write the completion marker again over the files as they are now: the checkpoint is whole again (as one
    written by another version would be), so only the checks of its content can refuse it."""
    marker = json.loads((checkpoint / ckpt.COMPLETE_MARKER_NAME).read_text())
    ckpt.write_completion_marker(str(checkpoint), marker["global_step"], method=marker["method"])


def edit_tensors(checkpoint, edit, name: str = METHOD_STATE_NAME) -> dict[str, torch.Tensor]:
    """Apply `edit` to the tensors of the safetensors file `name` of `checkpoint` (metadata kept, marker re-written);
    returns them as they were before."""
    path = checkpoint / name
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    state = safetensors.torch.load_file(str(path))
    original = dict(state)
    edit(state)
    safetensors.torch.save_file(state, str(path), metadata=metadata)
    rewrite_marker(checkpoint)
    return original


def edit_trainer_state(checkpoint, text: str) -> None:
    (checkpoint / TRAINER_STATE).write_text(text)
    rewrite_marker(checkpoint)


def refusal(trainer, resume) -> str:
    """The message of the refusal to resume from `resume`, checked to be one line."""
    with pytest.raises(ckpt.IncompleteCheckpointError) as error:
        trainer.train(resume_from_checkpoint=resume)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def grow(state, key):
    state[key] = torch.cat([state[key], state[key][:1]])


METHOD_STATE_CASES = {
    "wrong shape": (
        lambda s: grow(s, "source_head.weight"),
        "has the key 'source_head.weight' of shape [{rows_plus_1}, {cols}] where [{rows}, {cols}] is expected",
    ),
    "missing key": (lambda s: s.pop("teacher.num_updates"), "lacks the key 'teacher.num_updates'"),
    "extra teacher key": (
        lambda s: s.update({"teacher.model.extra": torch.ones(2)}),
        "has the unexpected key 'teacher.model.extra'",
    ),
    "extra regulariser key": (
        lambda s: s.update({"method.extra": torch.ones(2)}),
        "has the unexpected key 'method.extra'",
    ),
    "wrong dtype": (
        lambda s: s.update({"teacher.num_updates": s["teacher.num_updates"].float()}),
        "has the key 'teacher.num_updates' of dtype torch.float32 where torch.int64 is expected",
    ),
}


@pytest.mark.parametrize("case", sorted(METHOD_STATE_CASES))
def test_a_method_state_of_another_layout_is_refused_in_one_line(run_dir, case):
    edit, expected = METHOD_STATE_CASES[case]
    checkpoint = run_dir / "checkpoint-2"
    rows, cols = edit_tensors(checkpoint, edit)["source_head.weight"].shape
    assert ckpt.is_complete_checkpoint(str(checkpoint))  # the marker is valid: the content itself is checked
    trainer = make_trainer(run_dir, "smile", max_steps=3)
    message = refusal(trainer, str(checkpoint))
    assert message == (
        f"Cannot resume from {checkpoint}: {METHOD_STATE_NAME} cannot be loaded: the saved method state "
        + expected.format(rows=rows, rows_plus_1=rows + 1, cols=cols)
        + " (was it written by another version or method?)."
    )
    # a plain rerun reaches the same checkpoint (its files are whole) and refuses it the same way
    assert refusal(make_trainer(run_dir, "smile", max_steps=3), True) == message


def test_a_refused_method_state_loads_nothing(run_dir):
    """A refusal happens before any part of the method state is loaded: the trainer's source head and teacher keep
    their values (no half-loaded state)."""
    edit_tensors(run_dir / "checkpoint-2", lambda s: s.pop("teacher.num_updates"))
    trainer = make_trainer(run_dir, "smile", max_steps=3)
    trainer.regularizer.setup(trainer.regularizer_context())
    before = {k: v.clone() for k, v in trainer.method_state_dict().items()}
    saved = safetensors.torch.load_file(str(run_dir / "checkpoint-2" / METHOD_STATE_NAME))
    assert not torch.equal(saved["source_head.weight"], before["source_head.weight"])  # loading would change it
    with pytest.raises(ValueError, match="lacks the key 'teacher.num_updates'"):
        trainer.load_method_state_dict(saved)
    for key, value in trainer.method_state_dict().items():
        assert torch.equal(value, before[key]), key


def test_student_weights_of_another_shape_are_refused_in_one_line(run_dir):
    checkpoint = run_dir / "checkpoint-2"
    weights = safetensors.torch.load_file(str(checkpoint / "model.safetensors"))
    key = next(k for k, v in sorted(weights.items()) if v.dtype.is_floating_point and v.ndim == 2)  # a linear layer
    rows, cols = weights[key].shape
    edit_tensors(checkpoint, lambda s: grow(s, key), name="model.safetensors")
    message = refusal(make_trainer(run_dir, "smile", max_steps=3), str(checkpoint))
    assert message.startswith(f"Cannot resume from {checkpoint}: the student's weights cannot be loaded: "), message
    assert f"size mismatch for {key}: copying a param with shape torch.Size([{rows + 1}, {cols}])" in message, message


TRAINER_STATE_CASES = {
    "global_step 999": (
        lambda state: {**state, "global_step": 999},
        "the step it records disagrees: its folder name checkpoint-2 says 2, its checkpoint_complete.json says 2, "
        "its trainer_state.json (global_step) says 999",
    ),
    "invalid JSON": (None, "trainer_state.json is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    "no global_step": (
        lambda state: {k: v for k, v in state.items() if k != "global_step"},
        "trainer_state.json has no field 'global_step'",
    ),
    "ill-typed field": (
        lambda state: {**state, "log_history": "lost"},
        "trainer_state.json's field 'log_history' is 'lost', not a list of objects or null",
    ),
    "string step": (
        lambda state: {**state, "global_step": "2"},
        "trainer_state.json's field 'global_step' is '2', not an integer",
    ),
    "unknown field": (
        lambda state: {**state, "global_steps": 2},
        "trainer_state.json has the field 'global_steps', which is not a Trainer state field",
    ),
}


@pytest.mark.parametrize("case", sorted(TRAINER_STATE_CASES))
def test_a_malformed_trainer_state_is_refused_and_skipped_on_a_plain_rerun(run_dir, case, caplog, monkeypatch):
    edit, expected = TRAINER_STATE_CASES[case]
    checkpoint = run_dir / "checkpoint-2"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    assert state["global_step"] == 2
    edit_trainer_state(checkpoint, "not json" if edit is None else json.dumps(edit(state)))
    assert ckpt.checkpoint_problem(str(checkpoint)) == expected

    message = refusal(make_trainer(run_dir, "smile", max_steps=3), str(checkpoint))
    assert message == f"Cannot resume from {checkpoint}: {expected}."
    # a plain rerun skips it (with a warning naming it), as it skips a damaged checkpoint, for the one before it
    seen, load = [], SmileTrainer._load_from_checkpoint
    monkeypatch.setattr(SmileTrainer, "_load_from_checkpoint", lambda self, path, model=None: seen.append(path) or
                        load(self, path, model))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="smile_hf.checkpoints"):
        trainer = make_trainer(run_dir, "smile", max_steps=3)
        trainer.train(resume_from_checkpoint=True)
    assert seen == [str(run_dir / "checkpoint-1")] and trainer.state.global_step == 3
    assert f"Skipping {checkpoint} (step 2)" in caplog.text and expected in caplog.text


def test_a_folder_renamed_to_another_step_is_refused_and_skipped(run_dir, monkeypatch):
    """checkpoint-2 copied as checkpoint-5: its marker and trainer_state.json say 2."""
    renamed = run_dir / "checkpoint-5"
    (run_dir / "checkpoint-2").rename(renamed)
    expected = (
        "the step it records disagrees: its folder name checkpoint-5 says 5, its checkpoint_complete.json says 2, "
        "its trainer_state.json (global_step) says 2"
    )
    assert ckpt.checkpoint_problem(str(renamed)) == expected
    assert (
        refusal(make_trainer(run_dir, "smile", max_steps=3), str(renamed))
        == f"Cannot resume from {renamed}: {expected}."
    )
    assert ckpt.get_last_checkpoint(str(run_dir)) == str(run_dir / "checkpoint-1")
    # a folder not named `checkpoint-<step>` is not compared by its name
    shutil.copytree(renamed, run_dir / "kept")
    assert ckpt.checkpoint_problem(str(run_dir / "kept")) is None


def test_a_marker_with_another_step_is_refused(run_dir):
    checkpoint = run_dir / "checkpoint-2"
    marker = json.loads((checkpoint / ckpt.COMPLETE_MARKER_NAME).read_text())
    (checkpoint / ckpt.COMPLETE_MARKER_NAME).write_text(json.dumps({**marker, "global_step": 1}))
    assert ckpt.checkpoint_problem(str(checkpoint)) == (
        "the step it records disagrees: its folder name checkpoint-2 says 2, its checkpoint_complete.json says 1, "
        "its trainer_state.json (global_step) says 2"
    )


# ---- through `smile-hf train`: one `error:` line, exit status 2 ----------------------------------------------------


def test_the_driver_refuses_a_method_state_of_another_layout_in_one_line(interrupted, tmp_path):  # noqa: F811
    out = copy_of(interrupted, tmp_path)
    checkpoint = out / "checkpoint-3"
    edit_tensors(checkpoint, lambda s: s.pop("teacher.num_updates"))
    result = run_script(*tiny_argv(out, "--resume_from_checkpoint", str(checkpoint)))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"smile-hf train: error: Cannot resume from {checkpoint}: {METHOD_STATE_NAME} cannot be loaded: the saved "
        "method state lacks the key 'teacher.num_updates' (was it written by another version or method?)."
    ], result.stderr


def test_the_driver_refuses_a_trainer_state_with_another_step_in_one_line(interrupted, tmp_path, capsys):  # noqa: F811
    out = copy_of(interrupted, tmp_path)
    checkpoint = out / "checkpoint-3"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    edit_trainer_state(checkpoint, json.dumps({**state, "global_step": 999}))
    with pytest.raises(SystemExit) as exit_info:
        smile_cli.main(["train", *tiny_argv(out, "--resume_from_checkpoint", str(checkpoint))])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("smile-hf train: error:")]
    assert errors == [
        f"smile-hf train: error: Cannot resume from {checkpoint}: the step it records disagrees: its folder name "
        "checkpoint-3 says 3, its checkpoint_complete.json says 3, its trainer_state.json (global_step) says 999."
    ]
