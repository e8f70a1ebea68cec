# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""One run per output folder: [`output_dir_lock`] holds an exclusive lock on `--output_dir` for the whole run.

The lock is the file `_smile_hf.lock` in the folder, locked with `fcntl.flock` (released by the kernel when its
process ends, however it ends) and holding the holder's PID, host, start time and command. A second run on the same
folder is refused in one line naming the holder; a lock file left by a process that is gone is stale and taken over.
The file's name starts with `_`, which the `Trainer`'s uploads to the Hub leave out. Where `fcntl` is missing, the
file is created with `O_EXCL` instead, and a file naming a process of this host that is gone is stale.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from ..checkpoints import OutputDirError
from .arguments import redact_tokens

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "_smile_hf.lock"
"""The lock file of an output folder while a run uses it."""


class OutputDirInUseError(OutputDirError):
    """Raised when another run holds the lock of the output folder."""


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(redact_tokens(sys.argv))}  # fmt: skip


def _read_holder(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None


def _in_use(output_dir: str, path: str) -> OutputDirInUseError:
    holder = _read_holder(path)
    who = (
        f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}"
        if holder else f"its lock file {path} names no holder yet"
    )  # fmt: skip
    return OutputDirInUseError(
        f"--output_dir {output_dir} is in use by another run ({who}). Wait for it to end (or stop it), or pass "
        "another --output_dir."
    )


def _prepare_folder(output_dir: str) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir {output_dir} is a file, not a folder: pass a folder (new or existing).")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"Cannot create --output_dir {output_dir}: {error.strerror or error}.") from error


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(_holder()).encode())
    os.fsync(fd)


def _acquire_flock(output_dir: str, path: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _in_use(output_dir, path) from None
        try:  # the file may have been removed by its last holder after we opened it: lock the one at `path`
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            _write_holder(fd)
            return fd
        os.close(fd)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _acquire_exclusive(output_dir: str, path: str) -> int:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            stale = holder and holder.get("host") == socket.gethostname() and _process_gone(int(holder.get("pid", -1)))
            if not stale:
                raise _in_use(output_dir, path) from None
            os.remove(path)
            continue
        _write_holder(fd)
        return fd
    raise _in_use(output_dir, path)


@contextmanager
def output_dir_lock(output_dir: str) -> Iterator[str]:
    """Hold the lock of `output_dir` (created if missing) while inside; yields the lock file's path.

    Raises:
        [`OutputDirInUseError`]: another run holds it (the message names it).
        [`OutputDirError`]: `output_dir` is a file, or cannot be created.
    """
    created = _missing_folders(output_dir)
    _prepare_folder(output_dir)
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        fd = _acquire_flock(output_dir, path) if fcntl is not None else _acquire_exclusive(output_dir, path)
    except OutputDirError:
        _remove_if_empty(created)
        raise
    try:
        yield path
    finally:
        try:
            os.remove(path)  # while still locked: a run waiting on this file then locks a new one
        except OSError:
            pass
        os.close(fd)
        _remove_if_empty(created)  # a run stopped before it wrote anything leaves no empty folders behind


def _missing_folders(folder: str) -> list[str]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing, folder = [], os.path.abspath(folder)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _remove_if_empty(folders: list[str]) -> None:
    """Remove `folders` (deepest first) while they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (or already gone)
            return


@contextmanager
def run_lock(training_args) -> Iterator[None]:
    """[`output_dir_lock`] on `training_args.output_dir`, taken by the main process only (global rank 0,
    `process_index`, not each node's local rank 0: one lock for the run on every node); with several processes the
    others wait for it to be taken and stop with the same one-line error when it is refused."""
    if training_args.world_size == 1:  # (sets up the process group of several processes)
        with output_dir_lock(training_args.output_dir):
            yield
        return
    import torch.distributed as dist

    with ExitStack() as stack:
        refused = None
        if training_args.process_index == 0:
            try:
                stack.enter_context(output_dir_lock(training_args.output_dir))
            except OutputDirError as error:
                refused = error
        message = [None if refused is None else (isinstance(refused, OutputDirInUseError), str(refused))]
        dist.broadcast_object_list(message, src=0)
        if refused is not None:
            raise refused
        if message[0] is not None:
            in_use, text = message[0]
            raise (OutputDirInUseError if in_use else OutputDirError)(text)
        yield
