# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The target term `L_main` of a micro-batch: the new head's cross-entropy against the hard labels (both labels of a
mix, weighted by lambda), with the stock `Trainer`'s `label_smoothing_factor`, or a user's `compute_loss_func` in its
place.

Only `L_main` changes: the methods' own terms (SMILE's auxiliary soft-target cross-entropy `L_aux` against the
teacher's mixed source probabilities, Co-Tuning's translated source labels...) are soft targets already and are
computed as their papers define them, without smoothing or the user's function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.modeling_outputs import ImageClassifierOutput

from .mixing import Mix, mixed_cross_entropy

TargetLossFunc = Callable[..., torch.Tensor]
"""A `Trainer` `compute_loss_func`: `fn(outputs, labels, num_items_in_batch=...)` -> scalar loss."""


class TargetLoss:
    """`L_main` of a micro-batch under its mix.

    Args:
        label_smoothing (`float`, *optional*, defaults to 0): `label_smoothing_factor` eps: each hard target's
            cross-entropy is `F.cross_entropy(logits, y, label_smoothing=eps)`.
        loss_func (`Callable`, *optional*): a `Trainer` `compute_loss_func`. It replaces the cross-entropy: it is
            called as the stock `Trainer` calls it, `loss_func(outputs, labels, num_items_in_batch=n)`, with `outputs`
            an `ImageClassifierOutput` holding the new head's `logits`, once per hard target of a mix (`y`, then
            `y[perm]`, weighted by lambda and 1 - lambda), and `n` the micro-batch's number of labels: what it returns
            is taken as a per-batch mean, like every other term (the `Trainer` divides it by the accumulation steps).
    """

    def __init__(self, label_smoothing: float = 0.0, loss_func: TargetLossFunc | None = None):
        if loss_func is not None and label_smoothing:
            raise ValueError(
                "`compute_loss_func` replaces the cross-entropy that `label_smoothing_factor` smooths: set "
                "label_smoothing_factor=0 and smooth inside the function."
            )
        self.label_smoothing = label_smoothing
        self.loss_func = loss_func

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None) -> torch.Tensor:
        if self.loss_func is None:
            return mixed_cross_entropy(logits.float(), labels, mix, self.label_smoothing)
        outputs = ImageClassifierOutput(logits=logits)

        def one(targets: torch.Tensor) -> torch.Tensor:
            return self.loss_func(outputs, targets, num_items_in_batch=targets.shape[0])

        return one(labels) if mix is None else mix.lam * one(labels) + (1.0 - mix.lam) * one(labels[mix.perm])
