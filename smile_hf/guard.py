# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Non-finite losses and weights: a diverged run stops (or skips the step) instead of training on NaN.

[`NonFiniteGuard`] collects, without a host sync, whether every loss term of the micro-batches of an optimizer step
is finite; [`NonFiniteGuardCallback`] reads that once per optimizer step, just before the optimizer applies the
gradients (the one host sync the guard adds, like the stock `logging_nan_inf_filter`). With `nan_policy="stop"` a
non-finite step raises [`NonFiniteLossError`] naming the terms, the step and the last finite values, before the
weights change; with `"skip_step"` the gradients are dropped so that the optimizer leaves every parameter (and its
state) as it was, and the buffers (BatchNorm statistics) are restored, up to `max_consecutive_skips` steps in a row. [`check_finite_weights`] refuses to save a model
with non-finite weights.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)

NAN_POLICIES = ("stop", "skip_step")


class NonFiniteLossError(FloatingPointError):
    """Raised when a training step has a non-finite loss term (the run diverged)."""


class NonFiniteWeightsError(FloatingPointError):
    """Raised instead of saving a model whose weights are not all finite."""


def _format_terms(terms: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"loss_{name}={value.item():.6g}" for name, value in terms.items())


class NonFiniteGuard:
    """Tracks the finiteness of the loss terms of the current optimizer step.

    Args:
        policy (`str`): `"stop"` (raise [`NonFiniteLossError`]) or `"skip_step"` (drop the step's gradients).
        max_consecutive_skips (`int`): with `"skip_step"`, how many steps in a row may be skipped before the run
            stops anyway.
    """

    def __init__(self, policy: str = "stop", max_consecutive_skips: int = 10):
        if policy not in NAN_POLICIES:
            raise ValueError(f"Unknown nan_policy '{policy}'; use one of {NAN_POLICIES}.")
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self.skipped_steps: list[int] = []
        self._step_terms: dict[str, torch.Tensor] = {}  # terms of the micro-batches of the current step
        self._finite: torch.Tensor | None = None  # device bool: every term of the step finite so far
        self._last_finite: tuple[int, dict[str, torch.Tensor]] | None = None

    def record(self, terms: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch's unweighted terms (detached scalars) to the current step (no host sync)."""
        finite = torch.stack([torch.isfinite(value).all() for value in terms.values()]).all()
        self._finite = finite if self._finite is None else self._finite & finite
        for name, value in terms.items():
            bad = self._step_terms.get(name)
            # keep a non-finite value of the step once seen, else the latest one
            self._step_terms[name] = value if bad is None else torch.where(torch.isfinite(bad), value, bad)

    def check(self, step: int) -> bool:
        """Called once per optimizer step, before the optimizer: whether the step must be skipped. Raises
        [`NonFiniteLossError`] under `"stop"`, or after too many consecutive skips. `step` is 0-based."""
        if self._finite is None:
            return False
        finite, terms = bool(self._finite), self._step_terms  # the host sync
        self._finite, self._step_terms = None, {}
        if finite:
            self.consecutive_skips = 0
            self._last_finite = (step, terms)
            return False
        bad = {name: value for name, value in terms.items() if not torch.isfinite(value).all()}
        last = (
            f"last finite values (step {self._last_finite[0] + 1}): {_format_terms(self._last_finite[1])}"
            if self._last_finite is not None
            else "no step of this run had finite values"
        )
        message = f"Training diverged at step {step + 1}: {_format_terms(bad)} not finite; {last}."
        if self.policy == "skip_step" and self.consecutive_skips < self.max_consecutive_skips:
            self.consecutive_skips += 1
            self.skipped_steps.append(step + 1)
            logger.warning(f"{message} Skipping the step ({self.consecutive_skips} in a row).")
            return True
        if self.policy == "skip_step":
            message += f" {self.consecutive_skips} steps in a row were skipped already (max_consecutive_skips)."
        raise NonFiniteLossError(
            f"{message} Lower the learning rate (or check the data), or set `nan_policy='skip_step'` to skip "
            "such steps. No checkpoint was written after the divergence."
        )


class NonFiniteGuardCallback(TrainerCallback):
    """Runs [`NonFiniteGuard.check`] before each optimizer step. A skipped step's gradients are set to `None`, which
    torch optimizers treat as "no update" (parameters and optimizer state unchanged), and, under `"skip_step"`, the
    model's floating-point buffers (BatchNorm running statistics, which the step's forward passes updated) are put
    back to their values at the start of the step."""

    def __init__(self, guard: NonFiniteGuard):
        self.guard = guard
        self._buffers: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.guard.policy == "skip_step" and model is not None:
            self._buffers = [b for b in model.buffers() if b.is_floating_point()]
            self._saved = [b.clone() for b in self._buffers]

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.guard.check(state.global_step) or model is None:
            return
        for parameter in model.parameters():
            parameter.grad = None
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)


def check_finite_weights(model: nn.Module, where: str) -> None:
    """Raise [`NonFiniteWeightsError`] naming the first parameter or buffer of `model` that is not finite."""
    tensors = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return
    name = next(n for n, t in tensors if not torch.isfinite(t).all())
    raise NonFiniteWeightsError(
        f"Not saving {where}: the model's weights are not finite (e.g. `{name}`), the run diverged. Lower the "
        "learning rate and train again."
    )
