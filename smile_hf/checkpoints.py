# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints that are either complete or recognisably incomplete.

A Trainer checkpoint is a folder of many files written one after the other (weights, optimizer, scheduler, RNG
states, trainer state and, for [`SmileTrainer`], `method_state.safetensors`). A crash in the middle leaves a folder
named like a checkpoint that cannot be resumed from, and `transformers.trainer_utils.get_last_checkpoint` would pick
it. [`SmileTrainer`] therefore writes a completion marker, `checkpoint_complete.json`, as the very last file of each
checkpoint (after every process has written its part): it lists every file of the checkpoint with its size and the
SHA-256 of its content (each file is read back once, right after it was written, while it is still in the page
cache). A folder is a complete checkpoint when the marker is there and every file it lists has the size and the
content hash it records: a truncated, overwritten or damaged file is found before anything is loaded from it. Its
`trainer_state.json` must also be a well-formed Trainer state, and its step must be the same in the folder name
(`checkpoint-<step>`), in the marker and in `trainer_state.json` (`global_step`): a checkpoint whose files were
edited or renamed, even with a re-written marker, is not resumed from.

[`get_last_checkpoint`] returns the newest complete checkpoint of an output folder and reports (log warning) the
newer folders it skipped and why; `SmileTrainer.train(resume_from_checkpoint=True)` and the run script use it.
[`CompleteCheckpointMixin`] gives a `Trainer` subclass this save and this resume.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import safetensors.torch
import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ._compat import push_checkpoint, rotate_checkpoints, trainer_run_dir
from .config import secrets_left_out

logger = logging.get_logger(__name__)

COMPLETE_MARKER_NAME = "checkpoint_complete.json"
"""Last file written into each checkpoint; its presence (with matching file sizes) means the checkpoint is whole."""

MARKER_FORMAT = "smile_hf.checkpoint"
MARKER_VERSION = 2
"""Version 2 records {"size", "sha256"} per file; version 1 (sizes only) is still read."""
HASH_CHUNK = 1 << 22

_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class IncompleteCheckpointError(ValueError):
    """Raised when asked to resume from a folder that is not a complete checkpoint, or whose state cannot be loaded
    into this trainer; its message is one line naming the checkpoint, the file and the key or field."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM ([`resumable_interrupts`]): `checkpoint` is the newest complete checkpoint
    its rerun resumes from (None: none yet), `runs` whether its folder holds several runs, each resuming its own."""

    def __init__(self, checkpoint: str | None, runs: bool = False):
        super().__init__(checkpoint)
        self.checkpoint, self.runs = checkpoint, runs

    def resume_hint(self) -> str:
        """What rerunning the same command does."""
        if self.runs:
            return "rerun the same command to resume every run from its last complete checkpoint"
        if self.checkpoint is None:
            return "no checkpoint was complete yet: rerun the same command to start again"
        return f"rerun the same command to resume from {self.checkpoint}"


@contextmanager
def resumable_interrupts(output_dir: str, runs: bool = False) -> Iterator[None]:
    """Turn a `KeyboardInterrupt` (Ctrl-C, or SIGTERM under [`smile_hf.cli.run_cli`]) into [`RunInterrupted`],
    naming the newest complete checkpoint of `output_dir` (`runs`: a folder of several runs)."""
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt as interrupt:
        raise RunInterrupted(None if runs else get_last_checkpoint(output_dir), runs) from interrupt


class DiskFullError(OSError):
    """Raised when a save runs out of space: names the folder being written, the checkpoints still intact and how to
    resume."""


# ---- writing ------------------------------------------------------------------------------------------------------


def _fsync_path(path: str) -> None:
    """Flush a file (or a directory entry, where the platform allows it) to stable storage."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # directories cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: str, write) -> None:
    """Write `path` through a temporary file in the same folder renamed into place: readers see the old file or
    the whole new one, never a truncated one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        write(tmp_path)
        _fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_path(folder)


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None):
    """`safetensors.torch.save_file`, written atomically (temporary file + rename)."""
    _write_atomic(path, lambda tmp: safetensors.torch.save_file(dict(tensors), tmp, metadata=metadata))


def _checkpoint_files(checkpoint_dir: str) -> dict[str, int]:
    """Relative path (POSIX separators) -> size in bytes of every file under `checkpoint_dir` but the marker."""
    files = {}
    for root, _, names in os.walk(checkpoint_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, checkpoint_dir).replace(os.sep, "/")
            if rel != COMPLETE_MARKER_NAME and not (name.startswith(".") and name.endswith(".tmp")):
                files[rel] = os.path.getsize(path)
    return dict(sorted(files.items()))


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's content, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_completion_marker(checkpoint_dir: str, global_step: int | None = None, **extra) -> str:
    """Mark `checkpoint_dir` complete: flush every file in it, then write `checkpoint_complete.json` atomically,
    with each file's size and SHA-256.

    Call it once every process has finished writing its part of the checkpoint, from the main process only.
    Returns the path of the marker.
    """
    files = {}
    for rel, size in _checkpoint_files(checkpoint_dir).items():
        path = os.path.join(checkpoint_dir, rel)
        _fsync_path(path)
        files[rel] = {"size": size, "sha256": file_sha256(path)}
    marker = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "global_step": global_step, **extra, "files": files}
    path = os.path.join(checkpoint_dir, COMPLETE_MARKER_NAME)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=2)

    _write_atomic(path, write)
    return path


def discard_checkpoint(checkpoint_dir: str) -> None:
    """Delete a checkpoint folder, marker first, so that a crash during the deletion cannot leave a folder that
    claims to be complete. Used before a checkpoint of the same step is written again."""
    marker = os.path.join(checkpoint_dir, COMPLETE_MARKER_NAME)
    if os.path.exists(marker):
        os.remove(marker)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


# ---- reading ------------------------------------------------------------------------------------------------------


def checkpoint_problem(checkpoint_dir: str, verify_content: bool = True) -> str | None:
    """Why `checkpoint_dir` is not a complete checkpoint, or None when it is. With `verify_content` (the default),
    every file's SHA-256 is compared with the marker's (one read of the checkpoint); else sizes only."""
    if not os.path.isdir(checkpoint_dir):
        return "it is not a folder"
    marker_path = os.path.join(checkpoint_dir, COMPLETE_MARKER_NAME)
    if not os.path.isfile(marker_path):
        return (
            f"it has no {COMPLETE_MARKER_NAME}: its save was interrupted (or it was not written by SmileTrainer)"
        )
    try:
        with open(marker_path, encoding="utf-8") as f:
            marker = json.load(f)
        files = marker["files"]
        if marker.get("format") != MARKER_FORMAT or not isinstance(files, dict):
            raise ValueError("not a smile_hf checkpoint marker")
        if not all(isinstance(v, int) or (isinstance(v, dict) and "size" in v) for v in files.values()):
            raise ValueError("unknown file entries")
        if marker.get("global_step") is not None and not _is_int(marker["global_step"]):
            raise ValueError(f"its global_step is {marker['global_step']!r}, not an integer")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {COMPLETE_MARKER_NAME} cannot be read ({error})"
    for rel, recorded in files.items():
        size, sha256 = (recorded, None) if isinstance(recorded, int) else (recorded["size"], recorded.get("sha256"))
        path = os.path.join(checkpoint_dir, *rel.split("/"))
        if not os.path.isfile(path):
            return f"{rel} is missing"
        if os.path.getsize(path) != size:
            return f"{rel} has {os.path.getsize(path)} bytes instead of {size}"
        if verify_content and sha256 is not None and file_sha256(path) != sha256:
            return f"{rel} is damaged (its content does not match the SHA-256 recorded when it was saved)"
    return step_problem(checkpoint_dir, marker.get("global_step"))


# ---- the step of a checkpoint: folder name, marker and trainer_state.json ------------------------------------------

TRAINER_STATE_NAME = "trainer_state.json"
"""The stock Trainer's state in each checkpoint (`transformers.TrainerState`)."""

_TRAINER_STATE_TYPES = {
    "global_step": "an integer", "max_steps": "an integer", "num_input_tokens_seen": "an integer",
    "train_batch_size": "an integer or null", "best_global_step": "an integer or null",
    "epoch": "a number", "logging_steps": "a number", "eval_steps": "a number", "save_steps": "a number",
    "num_train_epochs": "a number", "total_flos": "a number", "best_metric": "a number or null",
    "best_model_checkpoint": "a string or null", "trial_name": "a string or null",
    "log_history": "a list of objects or null", "trial_params": "an object or null",
    "stateful_callbacks": "an object or null", "is_local_process_zero": "a boolean",
    "is_world_process_zero": "a boolean", "is_hyper_param_search": "a boolean",
}  # fmt: skip
"""The fields of `trainer_state.json` a resume reads, and what each must be."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value, expected: str) -> bool:
    if value is None:
        return expected.endswith("or null")
    kind = expected.removesuffix(" or null")
    return {
        "an integer": _is_int(value),
        "a number": _is_int(value) or isinstance(value, float),
        "a string": isinstance(value, str),
        "a boolean": isinstance(value, bool),
        "an object": isinstance(value, dict),
        "a list of objects": isinstance(value, list) and all(isinstance(entry, dict) for entry in value),
    }[kind]


def read_trainer_state(path: str) -> tuple[dict | None, str | None]:
    """(the content of the `trainer_state.json` at `path`, None), or (None, why it cannot be resumed from): it must
    be a JSON object of `transformers.TrainerState` fields, with `global_step` (an integer >= 0) and every field a
    resume reads of its type."""
    from transformers.trainer_callback import TrainerState  # the Trainer's modules are imported only when checking

    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except OSError as error:
        return None, f"{TRAINER_STATE_NAME} cannot be read ({error})"
    except ValueError as error:
        return None, f"{TRAINER_STATE_NAME} is not valid JSON ({error})"
    if not isinstance(state, dict):
        return None, f"{TRAINER_STATE_NAME} is not a JSON object"
    if "global_step" not in state:
        return None, f"{TRAINER_STATE_NAME} has no field 'global_step'"
    unknown = sorted(set(state) - {field.name for field in dataclasses.fields(TrainerState)})
    if unknown:
        return None, f"{TRAINER_STATE_NAME} has the field '{unknown[0]}', which is not a Trainer state field"
    for name, expected in _TRAINER_STATE_TYPES.items():
        if name in state and not _has_type(state[name], expected):
            value = repr(state[name])
            value = value if len(value) <= 60 else f"{value[:57]}..."
            return None, f"{TRAINER_STATE_NAME}'s field '{name}' is {value}, not {expected}"
    if state["global_step"] < 0:
        return None, f"{TRAINER_STATE_NAME}'s field 'global_step' is {state['global_step']}, not a step (>= 0)"
    return state, None


def step_problem(checkpoint_dir: str, marker_step: int | None = None) -> str | None:
    """Why the step of `checkpoint_dir` is not one step, or None: its folder name (`checkpoint-<step>`, when it is
    named so), its completion marker's `global_step` (`marker_step`, when given) and its `trainer_state.json`'s
    `global_step` (which must be well-formed, see [`read_trainer_state`]) must agree."""
    steps = {}
    name = os.path.basename(os.path.normpath(checkpoint_dir))
    if (match := _CHECKPOINT_RE.match(name)) is not None:
        steps[f"its folder name {name}"] = int(match.group(1))
    if marker_step is not None:
        steps[f"its {COMPLETE_MARKER_NAME}"] = marker_step
    state_path = os.path.join(checkpoint_dir, TRAINER_STATE_NAME)
    if os.path.isfile(state_path):
        state, problem = read_trainer_state(state_path)
        if problem is not None:
            return problem
        steps[f"its {TRAINER_STATE_NAME} (global_step)"] = state["global_step"]
    if len(set(steps.values())) > 1:
        return "the step it records disagrees: " + ", ".join(f"{where} says {step}" for where, step in steps.items())
    return None


def is_complete_checkpoint(checkpoint_dir: str) -> bool:
    """Whether `checkpoint_dir` holds a whole checkpoint (see the module docstring)."""
    return checkpoint_problem(checkpoint_dir) is None


def check_checkpoint(checkpoint_dir: str) -> None:
    """Raise [`IncompleteCheckpointError`] with the reason unless `checkpoint_dir` is a complete checkpoint."""
    problem = checkpoint_problem(checkpoint_dir)
    if problem is not None:
        raise IncompleteCheckpointError(f"Cannot resume from {checkpoint_dir}: {problem}.")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every `checkpoint-<step>` folder of `output_dir`, complete or not, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match is not None and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def get_last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint of `output_dir` (highest step), or None.

    Drop-in for `transformers.trainer_utils.get_last_checkpoint` (which returns the highest step whether complete or
    not): newer folders that are not complete checkpoints are skipped, each with a warning saying why.
    """
    for step, path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning(f"Skipping {path} (step {step}) when looking for the last checkpoint: {problem}.")
    return None


def incomplete_checkpoints(output_dir: str) -> list[str]:
    """The `checkpoint-<step>` folders of `output_dir` that are not complete checkpoints."""
    return [path for _, path in list_checkpoints(output_dir) if checkpoint_problem(path) is not None]


# ---- run scripts: which checkpoint, if any, a run resumes from ------------------------------------------------------

RUN_CONFIG_NAME = "run_config.json"
"""What defines a run (model, data, the training arguments that change the weights), saved in its output folder."""
FINISHED_RUN_FILE = "results.json"
"""Written by the run scripts when a run has finished."""


class OutputDirError(ValueError):
    """Raised when an output folder holds another run, or a finished one, and the user did not say what to do."""


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return found


def _saved_run_config(output_dir: str) -> dict | None:
    """The `run_config.json` of `output_dir`, or `None` when it has none that reads as JSON."""
    try:
        with open(os.path.join(output_dir, RUN_CONFIG_NAME), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    training = saved.get("training") if isinstance(saved, dict) else None
    init_kwargs = training.get("model_init_kwargs") if isinstance(training, dict) else None
    if isinstance(init_kwargs, dict):  # older folders recorded a masked token, which defines no run
        init_kwargs.pop("token", None)
    return saved


def resume_point(output_dir: str, run_config: dict, resume_from_checkpoint: str | None = None,
                 overwrite: bool = False) -> str | None:  # fmt: skip
    """The checkpoint a run script resumes from, or None to start fresh; never silently another run's.

    - `resume_from_checkpoint` `"last"` (or `"true"`): the newest complete checkpoint of `output_dir`; a path: that
      checkpoint, which must be complete ([`IncompleteCheckpointError`] otherwise).
    - Else, an empty or missing `output_dir` starts fresh; `overwrite` deletes its checkpoints and results and starts
      fresh; a finished run (`results.json`) is an [`OutputDirError`] naming the arguments that differ; complete checkpoints are resumed from only
      when the `run_config.json` saved beside them equals `run_config` (else an [`OutputDirError`] naming the first
      differences and how to resume or start fresh).
    """
    if resume_from_checkpoint:
        if resume_from_checkpoint.strip().lower() not in ("last", "true"):
            check_checkpoint(resume_from_checkpoint)
            return resume_from_checkpoint
        last = get_last_checkpoint(output_dir)
        if last is None:
            raise IncompleteCheckpointError(
                f"--resume_from_checkpoint {resume_from_checkpoint}: no complete checkpoint in {output_dir}"
                + (f" (incomplete or damaged: {incomplete_checkpoints(output_dir)})" if os.path.isdir(output_dir) else "")
            )
        return last
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        return None
    fresh = "start fresh with --overwrite_output_dir True (deletes its checkpoints) or another --output_dir"
    if overwrite:
        for _, path in list_checkpoints(output_dir):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            discard_checkpoint(path)
        if os.path.exists(os.path.join(output_dir, FINISHED_RUN_FILE)):
            os.remove(os.path.join(output_dir, FINISHED_RUN_FILE))
        return None
    saved = _saved_run_config(output_dir)
    what = "; ".join(_differences(saved, run_config)[:3]) if isinstance(saved, dict) else f"no readable {RUN_CONFIG_NAME}"
    if os.path.isfile(os.path.join(output_dir, FINISHED_RUN_FILE)):
        differing = "the same arguments" if saved == run_config else f"differing: {what}"
        raise OutputDirError(f"{output_dir} holds a finished run ({FINISHED_RUN_FILE}; {differing}): {fresh}.")
    last = get_last_checkpoint(output_dir)
    if last is None:
        return None
    if saved == run_config:
        logger.warning(f"Resuming from {last}: the arguments saved in {RUN_CONFIG_NAME} match this run's.")
        return last
    raise OutputDirError(
        f"{output_dir} holds checkpoints of another run ({what}): resume it with --resume_from_checkpoint last, or "
        f"{fresh}."
    )


def write_run_config(output_dir: str, run_config: dict) -> None:
    """Save what defines a run beside its checkpoints (see [`resume_point`])."""
    os.makedirs(output_dir, exist_ok=True)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(run_config, f, indent=2, sort_keys=True)

    _write_atomic(os.path.join(output_dir, RUN_CONFIG_NAME), write)


# ---- the Trainer side ---------------------------------------------------------------------------------------------

NO_SPACE_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@contextmanager
def disk_full_named(folder: str, run_dir: str) -> Iterator[None]:
    """Turn running out of space while writing `folder` into a [`DiskFullError`] that names it, the newest complete
    checkpoint of `run_dir` (intact: a checkpoint without its completion marker is never resumed from) and how to
    resume."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as error:
        if error.errno not in NO_SPACE_ERRNOS:
            raise
        last = get_last_checkpoint(run_dir)
        resume = f"it resumes from {last}" if last is not None else "it starts again (no checkpoint was complete yet)"
        disk_full = DiskFullError(
            f"No space left on the device while writing {folder}: the earlier checkpoints are intact. Free some space "
            f"(or lower --save_total_limit) and rerun the same command: {resume}."
        )
        disk_full.errno = error.errno
        raise disk_full from error


class CompleteCheckpointMixin:
    """Mixin for a `transformers.Trainer` subclass (listed before `Trainer`): checkpoints are complete or
    recognisably incomplete, and only complete ones are resumed from.

    Each checkpoint is the stock one, then the files of `extra_checkpoint_files()` (written atomically by the main
    process), then, once every process is done, the completion marker. Pushing the checkpoint to the Hub and
    deleting old checkpoints (`save_total_limit`) wait until the marker is written, so an interrupted save never
    replaces the last complete checkpoint, locally or on the Hub. `train(resume_from_checkpoint=True)` picks the
    newest complete checkpoint; a given path must be a complete checkpoint. A checkpoint of the last step resumes
    with nothing left to train (the run goes on to its evaluation and export exactly as the uninterrupted one).
    """

    saving_checkpoint: bool = False
    """True while a checkpoint is written (`save_model` is then called for the checkpoint's model files)."""

    def extra_checkpoint_files(self) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]]:
        """File name -> (tensors, safetensors metadata) of the state the stock Trainer does not checkpoint."""
        return {}

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        folder = output_dir if output_dir is not None else self.args.output_dir
        with secrets_left_out(), disk_full_named(folder, self.args.output_dir):  # training_args.bin without tokens
            super()._save(output_dir, state_dict)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        with secrets_left_out():  # the training_args.bin it writes beside the uploaded model, without the tokens
            super()._push_from_checkpoint(checkpoint_folder)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                incomplete = incomplete_checkpoints(self.args.output_dir)
                raise ValueError(
                    f"No complete checkpoint to resume from in output directory ({self.args.output_dir})"
                    + (f"; incomplete ones (interrupted saves): {incomplete}" if incomplete else "")
                    + "."
                )
        elif resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            check_checkpoint(os.fspath(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _init_training_state(
        self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
    ) -> tuple[int, int]:
        """The stock state of a new or resumed training (epochs trained, batches trained in the current epoch), except
        that a checkpoint of the last step (`global_step >= max_steps`) resumes with every epoch done: the stock loop
        would skip the batches trained in the last epoch and then train one more step (a training forward pass, which
        moves BatchNorm statistics and `num_batches_tracked`, and an optimizer step) whenever `max_steps` is not a
        whole number of epochs, or always with `ignore_data_skip`."""
        epochs_trained, steps_trained_in_current_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is not None and self.state.global_step >= max_steps:
            return num_train_epochs, 0
        return epochs_trained, steps_trained_in_current_epoch

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = trainer_run_dir(self, trial)
        output_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        with disk_full_named(output_dir, run_dir):
            self._save_complete_checkpoint(model, trial, run_dir, output_dir)

    def _save_complete_checkpoint(self, model, trial, run_dir: str, output_dir: str) -> None:
        if self.args.should_save and os.path.exists(output_dir):
            logger.warning(f"Replacing {output_dir} (left by an earlier run or an interrupted save).")
            discard_checkpoint(output_dir)
        self.accelerator.wait_for_everyone()
        save_total_limit, push_to_hub = self.args.save_total_limit, self.args.push_to_hub
        self.args.save_total_limit, self.args.push_to_hub = None, False  # both wait for the marker
        self.saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit, self.args.push_to_hub = save_total_limit, push_to_hub
            self.saving_checkpoint = False
        if self.args.should_save:
            for name, (tensors, metadata) in self.extra_checkpoint_files().items():
                save_safetensors_atomic(tensors, os.path.join(output_dir, name), metadata)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_completion_marker(output_dir, self.state.global_step, **self.checkpoint_marker_fields())
        if push_to_hub:
            push_checkpoint(self, output_dir)
        if self.args.should_save:
            rotate_checkpoints(self, run_dir)

    def checkpoint_marker_fields(self) -> dict[str, str]:
        """Extra fields of the completion marker (e.g. the method that wrote the checkpoint)."""
        return {}
