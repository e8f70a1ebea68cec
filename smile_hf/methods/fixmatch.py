# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""FixMatch (Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang, Raffel; NeurIPS 2020, arXiv 2001.07685),
the semi-supervised baseline for training with unlabelled images, as its Algorithm 1 states it.

For a labelled batch of B images and an unlabelled batch of mu B images u_b, with alpha the weak augmentation (the
training transform: random crop and flip) and A the strong one (RandAugment + Cutout, [`smile_hf.randaugment`]):

    L_s = CE(p_model(y | alpha(x)), y)                                          (the trainer's L_main)
    q_b = p_model(y | alpha(u_b)), no gradient;  pseudo-label argmax(q_b)
    L_u = 1 / (mu B) sum_b 1(max q_b >= tau) CE(argmax(q_b), p_model(y | A(u_b)))
    L   = L_s + lambda_u L_u

with the paper's defaults tau = 0.95, lambda_u = 1 and mu = 7 (`unlabeled_batch_ratio`). `L_u` is a mean over the
whole unlabelled batch, confident or not.

Departures: the labelled batch, the weak view and the strong view go through the student in three forward passes
(the reference concatenates them into one, so BatchNorm's batch statistics are shared); the weak pass runs in
training mode without gradient (its BatchNorm statistics update the running ones, as the reference's single pass
does). The RandAugment pool lacks Equalize and Sharpness ([`smile_hf.randaugment`]). The optimiser, schedule and
the EMA of the evaluated model are the run's, not the paper's (SGD, cosine decay, EMA 0.999), so that every method
compared shares them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Regularizer, UnlabeledInputs
from .hyperparameters import HyperParameter
from .registry import register_regularizer

_REFERENCE = "FixMatch (Sohn et al., 2020), Algorithm 1 and Section 4"


def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The hard pseudo-label `argmax(q_b)` of each weak view, and the mask `1(max q_b >= threshold)` (as floats)."""
    confidence, labels = torch.softmax(weak_logits.detach().float(), dim=-1).max(dim=-1)
    return labels, (confidence >= threshold).float()


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """`L_u`: the cross-entropy of the strong view's logits against the weak view's hard pseudo-labels, for the
    images whose weak-view confidence is at least `threshold`, averaged over the whole batch."""
    labels, mask = pseudo_labels(weak_logits, threshold)
    return (F.cross_entropy(strong_logits.float(), labels, reduction="none") * mask).mean()


@register_regularizer
class FixMatch(Regularizer):
    """FixMatch's unlabelled term (see the module docstring)."""

    name = "fixmatch"
    title = "FixMatch"
    paper = (
        "Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang, Raffel. FixMatch: Simplifying Semi-Supervised "
        "Learning with Consistency and Confidence. NeurIPS 2020 (arXiv 2001.07685)."
    )
    description = (
        "FixMatch (Sohn et al., 2020) trains on labelled images with cross-entropy and on unlabelled images with "
        "pseudo-labels: the model's prediction on a weakly augmented view (random crop and flip) becomes a hard "
        "label when its confidence reaches a threshold, and the cross-entropy of a strongly augmented view "
        "(RandAugment and Cutout) against it is added (`loss_unlabeled`, averaged over the whole unlabelled batch)."
    )
    hyperparameters = (
        HyperParameter(
            "fixmatch_threshold", 0.95, "FixMatch: confidence threshold tau of a pseudo-label, in [0, 1].", low=0,
            high=1, search=(0.7, 0.99), doc="Confidence threshold `tau`: a weak-view prediction becomes a "
            "pseudo-label when its largest probability is at least this.", reference=_REFERENCE,
        ),
        HyperParameter(
            "fixmatch_lambda_u", 1.0, "FixMatch: weight lambda_u of the unlabelled loss.", low=0,
            search=(0.1, 10.0), log=True, doc="Weight `lambda_u` of the unlabelled term `L_u`.",
            reference=_REFERENCE,
        ),
    )  # fmt: skip
    unlabeled_views = "weak_strong"
    requires_unlabeled = True
    default_unlabeled_batch_ratio = 7.0  # the paper's mu

    def unlabeled_loss_terms(self, inputs: UnlabeledInputs):
        loss = fixmatch_loss(inputs.weak.logits, inputs.student.logits, self.fixmatch_threshold)
        return {"unlabeled": (self.fixmatch_lambda_u, loss)}

    def unlabeled_statistics(self, inputs: UnlabeledInputs) -> dict[str, torch.Tensor]:
        """`pseudo_label_rate`: the fraction of the unlabelled batch whose weak-view confidence reached the
        threshold (the images `L_u` trains on), as the reference implementation logs its mask."""
        return {"pseudo_label_rate": pseudo_labels(inputs.weak.logits, self.fixmatch_threshold)[1].mean()}
