# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Co-Tuning for Transfer Learning (You, Kou, Long, Wang; NeurIPS 2020).

The pre-trained (source) head is kept, as a trainable copy attached to the student (`smile_source_head`), next to
the new target head; both read the same pooled feature f. A category relationship R (K target x S source classes),
R[y] ~ p(y_s | y_t = y), turns each target label into a soft source label, which the source head learns:

    R[y]   = mean over the training images x of class y of softmax(source_model(x))   (computed once)
    L_co   = mean_b [ - sum_s R[y_b, s] * log_softmax(source_head(f_b))_s ]
    L      = L_main + cotuning_lambda * L_co,    cotuning_lambda = 2.3

This is TLlib's "direct approach" (`tllib/regularization/co_tuning.py` `Relationship`, `CoTuningLoss`;
`examples/.../co_tuning.py`, trade-off 2.3, weight decay 5e-4): R is computed from the pre-trained model in eval
mode over one pass of the target training set, before the first optimizer step, held in the regulariser's buffer
`relationship` and saved in checkpoints (a resumed run does not recompute it). One difference: TLlib reads the training set with the evaluation transform;
we read it as the Trainer does (`get_train_dataloader`, so with the training transform, as PaddleTransfer does),
because a `Trainer` has no generic handle on an evaluation transform of the training set. A target class with no
training image gets a uniform row. With several processes, the per-class sums are added over processes.
TLlib's scripts (`--finetune`) also train the backbone and the source head at 0.1x the new head's learning rate:
`backbone_lr_multiplier=0.1` does so for the backbone ([`smile_hf.param_groups`]), while the source head, a head,
keeps the full learning rate.

Under mixing the second target is mixed like the first: the source head of the mixed image learns
lambda * R[y] + (1 - lambda) * R[y[perm]] (the soft cross-entropy is linear in its target, so this equals
lambda * H(R[y]) + (1 - lambda) * H(R[y[perm]]), the same convention as the mixed cross-entropy of the new head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones import SOURCE_HEAD_NAME
from ..mixing import mix_tensor, soft_cross_entropy
from .base import LossInputs, LossTerms, Regularizer
from .context import RegularizerContext, as_context, for_each_training_batch
from .hyperparameters import HyperParameter
from .registry import register_regularizer


def relationship_from_sums(prob_sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """R = per-class mean of the source probabilities (K x S), from their per-class sums and counts; a class
    without images gets the uniform distribution."""
    uniform = torch.full_like(prob_sums, 1.0 / prob_sums.shape[1])
    means = prob_sums / counts.clamp(min=1).unsqueeze(1).to(prob_sums.dtype)
    return torch.where(counts.unsqueeze(1) > 0, means, uniform)


@register_regularizer
class CoTuning(Regularizer):
    """Co-Tuning (see the module docstring for the formula, the reference and the behaviour under mixing)."""

    name = "cotuning"
    title = "Co-Tuning"
    paper = (
        "You, Kou, Long, Wang. Co-Tuning for Transfer Learning. NeurIPS 2020."
    )
    description = (
        "Co-Tuning (You et al., 2020) also trains the source head against source labels translated from the "
        "target labels by a learned category relationship."
    )
    hyperparameters = (
        HyperParameter(
            "cotuning_lambda", 2.3, "Co-Tuning: weight of the source-head term.", low=0, search=(0.1, 10.0), log=True,
            doc="Co-Tuning: weight of the source-head cross-entropy against the translated source labels.",
            reference="TLlib examples/task_adaptation/image_classification/co_tuning.py (trade-off 2.3)",
        ),
    )  # fmt: skip
    needs_source_head = True

    def __init__(self, *args, **hyperparameters):
        super().__init__(*args, **hyperparameters)
        self.register_buffer("relationship", None)  # R (K x S), None until computed (or loaded)

    @torch.no_grad()
    def prepare(self, context: RegularizerContext) -> None:
        """Compute R with the student's current (pre-trained) backbone and source head, unless already known."""
        if self.relationship is not None:
            return
        context = as_context(context)
        model, adapter, device = context.model, context.adapter, context.device
        source_head = getattr(model, SOURCE_HEAD_NAME)
        num_classes = adapter.head(model).out_features
        sums = torch.zeros(num_classes, source_head.out_features, dtype=torch.float64, device=device)
        counts = torch.zeros(num_classes, dtype=torch.int64, device=device)

        def accumulate(pixel_values, labels):
            logits = adapter.forward(model, pixel_values, source_head=source_head).source_logits
            sums.index_add_(0, labels, F.softmax(logits.double(), dim=-1))
            counts.add_(torch.bincount(labels, minlength=num_classes))

        was_training = model.training
        model.eval()
        try:
            for_each_training_batch(context, accumulate, desc="Co-Tuning: category relationship")
        finally:
            model.train(was_training)
        sums = context.reduce(sums, reduction="sum")
        counts = context.reduce(counts, reduction="sum")
        self.relationship = relationship_from_sums(sums, counts).float()

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        if self.relationship is None:
            raise RuntimeError("Co-Tuning's category relationship is not computed: call `prepare(context)` first.")
        self.follow_device(inputs.labels.device)  # once, after a checkpoint was loaded on the CPU
        target = self.relationship[inputs.labels]
        if inputs.mix is not None:
            target = mix_tensor(target, inputs.mix)
        loss = soft_cross_entropy(inputs.student.source_logits.float(), target)
        return {"cotuning": (self.cotuning_lambda, loss)}
