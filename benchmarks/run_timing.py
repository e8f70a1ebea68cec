# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Timing the runs of the run driver (`smile_hf.run`) from outside: a callback that splits a training run's time into
waiting for data and stepping, attached to every `SmileTrainer` the driver builds, and one in-process run of the driver
timed end to end. Shared by `epoch.py` and `search_cost.py`.

How the data wait is measured ([`StepTimer`]): the `Trainer` fetches the batches of an optimizer step
(`get_batch_samples`: `next()` on the DataLoader iterator, the transfer to the device) between `on_epoch_begin` or the
previous step's `on_step_end` and the step's `on_step_begin`. The time of that gap is the time the training loop
waited for data (with the first batch of the epoch it includes creating the iterator, i.e. starting the workers). On
CUDA the callback synchronizes the device at `on_step_end` first, so that the step's queued kernels are counted as
step, not as waiting (one extra sync per step). The gap also holds the Trainer's own bookkeeping after a step
(logging every `logging_steps`), which is small against a step.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time of a training run (`on_train_begin` to `on_train_end`), of its optimizer steps, and of the gaps in
    which the loop waited for the next batch (see the module's docstring)."""

    def __init__(self, synchronize: bool = False):
        self.synchronize = synchronize
        self.start = self.end = self._mark = None
        self.data_wait_s, self.steps = 0.0, 0

    def _now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self._now()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._mark = self._now()

    def on_step_begin(self, args, state, control, **kwargs):
        self.data_wait_s += time.perf_counter() - self._mark
        self.steps += 1

    def on_step_end(self, args, state, control, **kwargs):
        self._mark = self._now()

    def on_train_end(self, args, state, control, **kwargs):
        self.end = self._now()

    def summary(self) -> dict[str, float]:
        """`train_s` (the run's training wall time), `data_wait_s`, `data_wait_fraction` and `steps`."""
        train_s = self.end - self.start
        return {"train_s": train_s, "data_wait_s": self.data_wait_s, "data_wait_fraction": self.data_wait_s / train_s,
                "steps": self.steps}  # fmt: skip


@contextlib.contextmanager
def timed_trainers(timers: list[StepTimer], synchronize: bool = False):
    """While open, every `SmileTrainer` the run driver builds gets a [`StepTimer`] (appended to `timers`)."""
    from smile_hf.run import driver

    original = driver.SmileTrainer

    class TimedSmileTrainer(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            timers.append(StepTimer(synchronize))
            self.add_callback(timers[-1])

    driver.SmileTrainer = TimedSmileTrainer
    try:
        yield timers
    finally:
        driver.SmileTrainer = original


def run_driver(argv: list[str]) -> tuple[dict, float]:
    """Run `smile_hf.run.main(argv)` in this process (its printed output dropped); return its results and its wall
    time in seconds."""
    from smile_hf.run import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's results table; the benchmark reports its own
        result = main(argv)
    return result, time.perf_counter() - start


def load_average() -> dict:
    """`uptime`'s line and the 1 / 5 / 15 minute load averages (the machine may be shared)."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        line = None
    return {"uptime": line, "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def fmt_load(load: dict) -> str:
    """`1.0, 2.0, 3.0`: the load averages of a [`load_average`] record, or `n/a`."""
    return ", ".join(f"{v:.1f}" for v in load["loadavg"]) if load.get("loadavg") else "n/a"


def device_and_load(payload: dict) -> tuple[str, str]:
    """`Device: ...; torch ..., transformers ...` and `Load average at the start / end: ...` of a timing report."""
    env, load = payload["environment"], payload["load"]
    where = env["cuda"] or f"CPU ({env['processor']}, {env['cpu_count']} cores, {env['torch_threads']} torch thread(s))"
    return (
        f"Device: {where}; torch {env['torch']}, transformers {env['transformers']}",
        f"Load average at the start / end: {fmt_load(load['start'])} / {fmt_load(load['end'])}.",
    )
