# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Ctrl-C and SIGTERM that stop a run even when Python drops the first `KeyboardInterrupt`.

A signal handler raises where the interpreter happens to be; raised inside a finaliser (`__del__`, a weakref or
garbage-collector callback) or under a library's `except BaseException`, the exception is printed as "ignored" or
swallowed, and training goes on. The command-line scripts ([`smile_hf.cli.run_cli`]) run within
[`handled_interrupts`]: its handler records the signal before raising, and [`InterruptCallback`] (which
[`SmileTrainer`] adds) raises it again at the end of the next step or prediction batch if it is still pending. In a
user's own script, where nothing is installed, the callback does nothing.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from transformers import TrainerCallback

_pending: str | None = None


@contextmanager
def handled_interrupts() -> Iterator[None]:
    """Within: SIGINT and SIGTERM record the signal, then raise `KeyboardInterrupt(<signal name>)`. On leaving, the
    previous handlers are back and nothing is pending."""
    global _pending

    def interrupt(signum, frame):
        global _pending
        _pending = signal.Signals(signum).name
        raise KeyboardInterrupt(_pending)

    _pending = None
    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending = None


def pending() -> str | None:
    """The name of the signal received and not yet acted on (None: none)."""
    return _pending


def raise_if_pending() -> None:
    """Raise `KeyboardInterrupt(<signal name>)` again if a signal was received (its first raise was lost)."""
    if _pending is not None:
        raise KeyboardInterrupt(_pending)


class InterruptCallback(TrainerCallback):
    """Raises a received SIGINT / SIGTERM whose first `KeyboardInterrupt` was lost, at the end of the next optimizer
    step or prediction batch."""

    def on_step_end(self, args, state, control, **kwargs):
        raise_if_pending()

    def on_prediction_step(self, args, state, control, **kwargs):
        raise_if_pending()
