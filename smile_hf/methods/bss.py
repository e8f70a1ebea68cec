# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""BSS: Catastrophic Forgetting Meets Negative Transfer: Batch Spectral Shrinkage for Safe Transfer Learning
(Chen, Wang, Fu, Long, Wang; NeurIPS 2019).

With F the B x D matrix of the batch's pooled features (the input of the new classifier, `ForwardOutput.pooled`)
and sigma_1 >= ... >= sigma_m its singular values, m = min(B, D):

    L_bss = sum_{i=1..k} sigma_{m+1-i}^2            (the k smallest singular values)
    L     = L_main + bss_lambda * L_bss

with k = 1 and bss_lambda = 0.001 (TLlib `BatchSpectralShrinkage`, `examples/.../bss.py`, which trains with weight
decay 5e-4). The singular values are computed in float32; k is capped at m.

Under mixing, F is the pooled features of the batch the student is trained on, i.e. of the mixed images (for
manifold mixup, of the mixed hidden states): the penalty shrinks the spectrum of the features the classifier
actually sees, and needs no second forward pass.
"""

from __future__ import annotations

import torch

from .base import LossInputs, LossTerms, Regularizer
from .hyperparameters import HyperParameter
from .registry import register_regularizer


def batch_spectral_shrinkage(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the squares of the k smallest singular values of the B x D matrix `features`."""
    singular_values = torch.linalg.svdvals(features.float())  # descending
    k = min(k, singular_values.numel())
    return singular_values[-k:].pow(2).sum()


@register_regularizer
class BSS(Regularizer):
    """Batch Spectral Shrinkage (see the module docstring for the formula and the reference)."""

    name = "bss"
    title = "BSS (Batch Spectral Shrinkage)"
    paper = (
        "Chen, Wang, Fu, Long, Wang. Catastrophic Forgetting Meets Negative Transfer: Batch Spectral "
        "Shrinkage for Safe Transfer Learning. NeurIPS 2019."
    )
    description = (
        "BSS (Chen et al., 2019) penalises the smallest singular values of the batch features."
    )
    hyperparameters = (
        HyperParameter(
            "bss_lambda", 0.001, "BSS: weight of the spectral shrinkage penalty.", low=0, search=(1e-4, 1e-1),
            log=True, doc="BSS: weight of the sum of the k smallest squared singular values of the batch features.",
            reference="TLlib bss.py (Chen et al., 2019)",
        ),
        HyperParameter(
            "bss_k", 1, "BSS: number of smallest singular values penalised.", type=int, low=1, search=(1, 4),
            reference="TLlib bss.py (Chen et al., 2019)",
        ),
    )  # fmt: skip

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        return {"bss": (self.bss_lambda, batch_spectral_shrinkage(inputs.student.pooled, self.bss_k))}
