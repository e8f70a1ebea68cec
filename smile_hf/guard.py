# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Non-finite losses and weights: a diverged run stops (or skips the step) instead of training on NaN.

[`NonFiniteGuard`] collects, on the device, whether every loss term of the micro-batches of an optimizer step is
finite, and [`NonFiniteGuardCallback`] hands each optimizer step to it. What happens then is the `nan_policy`:

- `"stop"` (the default) never makes the host wait during a step. The first non-finite step, its terms and the last
  finite ones are kept on the device; [`NonFiniteGuard.raise_if_diverged`] reads them (one host sync) when the
  trainer logs, saves or ends training, and raises [`NonFiniteLossError`] naming that step. No checkpoint or model
  is written after the divergence, but the weights of the running trainer may have taken the non-finite steps.
- `"stop_at_step"` reads the flag before each optimizer step (one host sync per step) and raises before the weights
  change.
- `"skip_step"` reads it before each optimizer step too, and drops a non-finite step's gradients so that the
  optimizer leaves every parameter (and its state) as it was; the buffers (BatchNorm statistics) are restored, up to
  `max_consecutive_skips` steps in a row.

With several processes the decision is taken on the flags of all of them (an all-reduce), so that every replica
stops or skips together. [`check_finite_weights`] refuses to save a model with non-finite weights.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)

NAN_POLICIES = ("stop", "stop_at_step", "skip_step")
_NEVER = 2**62  # "no such step" for the step counters (min-reduced across processes)


class NonFiniteLossError(FloatingPointError):
    """Raised when a training step has a non-finite loss term (the run diverged)."""


class NonFiniteWeightsError(FloatingPointError):
    """Raised instead of saving a model whose weights are not all finite."""


def _format_terms(names: tuple[str, ...], values: torch.Tensor, only_bad: bool = False) -> str:
    pairs = zip(names, values.tolist())
    return ", ".join(f"loss_{n}={v:.6g}" for n, v in pairs if not only_bad or not math.isfinite(v))


def _all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise minimum over processes (the tensor itself with one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


class _TermHistory:
    """On the device: the first step with a non-finite term and its terms, and the last finite step before it and
    its terms, for one set of term names (a method's terms differ in its final plain phase)."""

    def __init__(self, values: torch.Tensor):
        self.first_bad = torch.full((), _NEVER, dtype=torch.long, device=values.device)
        self.last_finite = torch.full((), _NEVER, dtype=torch.long, device=values.device)
        self.bad_values = torch.zeros_like(values)
        self.finite_values = torch.zeros_like(values)

    def update(self, step: int, values: torch.Tensor) -> None:
        """Record optimizer step `step` (0-based) without a host sync."""
        finite = torch.isfinite(values).all()
        before_divergence = self.first_bad == _NEVER
        newly_bad = before_divergence & ~finite
        still_finite = before_divergence & finite
        self.first_bad.masked_fill_(newly_bad, step)
        self.bad_values = torch.where(newly_bad, values, self.bad_values)
        self.last_finite.masked_fill_(still_finite, -step - 1)  # negated: the min-reduce picks the latest
        self.finite_values = torch.where(still_finite, values, self.finite_values)


class NonFiniteGuard:
    """Tracks the finiteness of the loss terms of each optimizer step.

    Args:
        policy (`str`): `"stop"`, `"stop_at_step"` or `"skip_step"` (see the module docstring).
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
        self._step: tuple[tuple[str, ...], torch.Tensor] | None = None  # term names, values of the current step
        self._history: dict[tuple[str, ...], _TermHistory] = {}
        self._last_finite: tuple[int, tuple[str, ...], torch.Tensor] | None = None  # synced policies

    @property
    def checks_every_step(self) -> bool:
        """Whether the flag is read (a host sync) before every optimizer step."""
        return self.policy != "stop"

    def record(self, terms: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch's unweighted terms (detached scalars) to the current step (no host sync). A term that
        was not finite in an earlier micro-batch of the step keeps its non-finite value."""
        names, values = tuple(terms), torch.stack([value.reshape(()) for value in terms.values()])
        if self._step is not None and self._step[0] == names:
            earlier = self._step[1]
            values = torch.where(torch.isfinite(earlier), values, earlier)
        self._step = (names, values)

    def end_step(self, step: int) -> bool:
        """Called once per optimizer step, before the optimizer: whether the step must be skipped. Under
        `"stop_at_step"` and `"skip_step"` (after too many consecutive skips) raises [`NonFiniteLossError`].
        `step` is 0-based."""
        if self._step is None:
            return False
        names, values = self._step
        self._step = None
        if not self.checks_every_step:
            history = self._history.get(names)
            if history is None:
                history = self._history[names] = _TermHistory(values)
            history.update(step, values)
            return False
        finite = torch.isfinite(values).all().to(torch.uint8)
        if bool(_all_reduce_min(finite)):  # the host sync
            self.consecutive_skips = 0
            self._last_finite = (step, names, values)
            return False
        return self._skip_or_raise(step, names, values)

    def _skip_or_raise(self, step: int, names: tuple[str, ...], values: torch.Tensor) -> bool:
        message = self._divergence_message(step, names, values, self._last_finite)
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

    @staticmethod
    def _divergence_message(step, names, values, last_finite) -> str:
        bad = _format_terms(names, values, only_bad=True) or "the terms of another process"
        if last_finite is not None:
            last = f"last finite values (step {last_finite[0] + 1}): {_format_terms(last_finite[1], last_finite[2])}"
        else:
            last = "no step of this run had finite values" if step == 0 else "no finite values kept by this process"
        return f"Training diverged at step {step + 1}: {bad} not finite; {last}."

    def raise_if_diverged(self, current_step: int) -> None:
        """Under `"stop"`: raise [`NonFiniteLossError`] if a step so far had a non-finite term, on any process (one
        host sync and, with several processes, one all-reduce). Call it at the same point on every process."""
        if self.checks_every_step or not self._history:
            return
        histories = list(self._history.items())
        local = torch.stack([torch.stack([h.first_bad, h.last_finite]) for _, h in histories])
        steps = _all_reduce_min(local.clone()).tolist()  # the host sync
        first_bad = min(bad for bad, _ in steps)
        if first_bad == _NEVER:
            return
        index = next(i for i, (bad, _) in enumerate(steps) if bad == first_bad)
        names, history = histories[index]
        values = history.bad_values if local[index, 0].item() == first_bad else torch.zeros(0)  # another process's
        finite = [(-last - 1, n, h.finite_values) for (n, h), (_, last) in zip(histories, local.tolist())]
        finite = [entry for entry in finite if 0 <= entry[0] < first_bad]  # this process's, before the divergence
        last_finite = max(finite, key=lambda entry: entry[0]) if finite else None
        message = self._divergence_message(first_bad, names, values, last_finite)
        raise NonFiniteLossError(
            f"{message} (Found at step {current_step}, when the run next logged, saved or ended: with "
            "`nan_policy='stop'` the guard reads the loss only then, to keep the training step free of host syncs; "
            "`nan_policy='stop_at_step'` stops at the step itself.) Lower the learning rate (or check the data), or "
            "set `nan_policy='skip_step'` to skip such steps. No checkpoint was written after the divergence."
        )


class NonFiniteGuardCallback(TrainerCallback):
    """Hands each optimizer step to [`NonFiniteGuard.end_step`]. A skipped step's gradients are set to `None`, which
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
        if not self.guard.end_step(state.global_step) or model is None:
            return
        for parameter in model.parameters():
            parameter.grad = None
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)


def check_finite_weights(model: nn.Module, where: str) -> None:
    """Raise [`NonFiniteWeightsError`] naming the first parameter or buffer of `model` that is not finite."""
    check_finite_tensors([*model.named_parameters(), *model.named_buffers()], where)


def check_finite_tensors(named_tensors: list[tuple[str, torch.Tensor]], where: str) -> None:
    """Raise [`NonFiniteWeightsError`] naming the first floating-point tensor of `named_tensors` (e.g. a gathered
    state dict's items) that is not finite."""
    tensors = [(n, t) for n, t in named_tensors if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return
    name = next(n for n, t in tensors if not torch.isfinite(t).all())
    raise NonFiniteWeightsError(
        f"Not saving {where}: the model's weights are not finite (e.g. `{name}`), the run diverged. Lower the "
        "learning rate and train again."
    )
