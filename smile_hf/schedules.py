# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The learning-rate schedule of the SMILE reference: constant, multiplied once by a factor part-way through."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def step_decay_schedule(
    optimizer: torch.optim.Optimizer, num_training_steps: int, warmup_steps: int, fraction: float, gamma: float
) -> LambdaLR:
    """A constant learning rate after the stock linear warm-up (`constant_with_warmup`: `step / warmup_steps` for
    `step < warmup_steps`, step for step), multiplied once by `gamma` from step `int(fraction * num_training_steps)`
    on. Every parameter group is scaled alike."""
    milestone = int(fraction * num_training_steps)

    def factor(step: int) -> float:
        return (step / warmup_steps if step < warmup_steps else 1.0) * (gamma if step >= milestone else 1.0)

    return LambdaLR(optimizer, factor)
