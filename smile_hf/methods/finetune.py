# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Plain fine-tuning: the (mixed) cross-entropy of the new head and nothing else."""

from __future__ import annotations

from .base import Regularizer
from .registry import register_regularizer


@register_regularizer
class FineTune(Regularizer):
    """Fine-tuning: `L = CE(logits, y)`; with a mixing strategy, the mixed cross-entropy."""

    name = "finetune"
    title = "fine-tuning"
    description = (
        "The pre-trained backbone and a new, randomly initialised classification head were trained together "
        "with the cross-entropy of the target labels."
    )
