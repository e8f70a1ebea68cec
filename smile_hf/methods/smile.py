# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""SMILE: Self-Distilled MIxup for Efficient Transfer LEarning (Li, Xiong, Xu, Dou; arXiv 2103.13941).

With lambda, perm the batch's mix, F_s the student's last feature map of the mixed images, F_t and p_t the
teacher's (EMA of the pre-trained model) feature map and source probabilities of the unmixed images:

    L_main = lambda * CE(logits, y) + (1 - lambda) * CE(logits, y[perm])           (computed by the trainer)
    L_aux  = lambda * H(p_t, aux_logits) + (1 - lambda) * H(p_t[perm], aux_logits)
    L_reg  = || lambda * F_t + (1 - lambda) * F_t[perm] - F_s ||_2 / (H * W)      (one norm over B x C x H x W)
    L_cls  = 1/2 (||W_fc||^2 + ||b_fc||^2 + ||W_aux||^2 + ||b_aux||^2)
    L      = L_main + aux_lambda * L_aux + reg_lambda * L_reg + cls_lambda * L_cls

In the final plain phase: `L = CE(logits, y) + cls_lambda * L_cls`. H(q, z) is the soft cross-entropy.

With unlabelled images (`SmileTrainer(unlabeled_dataset=...)`), the unlabelled batch is mixed among itself (its own
lambda and permutation) and `L_aux` and `L_reg`, which read no label, are added on it with the same weights, logged
as `loss_aux_unlabeled` and `loss_reg_unlabeled` (not in the final plain phase).
"""

from __future__ import annotations

import torch

from ..backbones import SOURCE_HEAD_NAME
from ..mixing import mix_tensor, soft_cross_entropy
from ..text import token_mixup_distance
from .base import LossInputs, LossTerms, Regularizer, UnlabeledInputs, half_squared_norm
from .hyperparameters import HyperParameter
from .registry import register_regularizer

# The reference recipe of SMILE (PaddlePaddle/Research, CV/SMILE/finetune.py): 9000 iterations in all, the last 1000
# plain fine-tuning.
REFERENCE_TOTAL_STEPS = 9000
REFERENCE_FINAL_FINETUNE_FRACTION = 1000 / REFERENCE_TOTAL_STEPS
_REFERENCE = "SMILE reference (PaddlePaddle/Research, CV/SMILE/finetune.py)"


def feature_mixup_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, mix) -> torch.Tensor:
    """L_reg: Frobenius norm of mix(F_t) - F_s over the whole batch, divided by the spatial size H * W."""
    height, width = student_map.shape[-2:]
    target = mix_tensor(teacher_map.detach(), mix).to(student_map.dtype)
    return torch.linalg.vector_norm(target - student_map) / (height * width)


@register_regularizer
class Smile(Regularizer):
    """SMILE's triplet regulariser (see the module docstring for the formulas)."""

    name = "smile"
    title = "SMILE (Self-Distilled MIxup for Efficient Transfer LEarning)"
    paper = (
        "Li, Xiong, Xu, Dou. SMILE: Self-Distilled MIxup for Efficient Transfer LEarning. arXiv 2103.13941, "
        "2021."
    )
    description = (
        "SMILE (Li, Xiong, Xu, Dou, 2021) fine-tunes the pre-trained backbone with a new head on mixed-up "
        "images and regularises it with three terms: the mixed cross-entropy of the target labels, the "
        "distance between the student's feature map of a mixed image and the mix of a mean teacher's feature "
        "maps of the two images (`loss_reg`), and the soft cross-entropy of an auxiliary copy of the source "
        "head against the mixed source predictions of the teacher (`loss_aux`), plus a weight penalty on both "
        "heads (`loss_cls`). The teacher is an exponential moving average of the student's backbone, started "
        "from the pre-trained model. The last part of training is plain fine-tuning."
    )
    hyperparameters = (
        HyperParameter(
            "reg_lambda", 0.01, "SMILE: weight of the feature mixup term L_reg.", low=0, search=(1e-3, 1.0), log=True,
            doc="Weight of the sample-to-feature mixup term `L_reg` (distance between the student's feature map of "
            "the mixed image and the mix of the teacher's feature maps).", reference=_REFERENCE,
        ),
        HyperParameter(
            "aux_lambda", 0.1, "SMILE: weight of the auxiliary-head term L_aux.", low=0, search=(1e-2, 1.0), log=True,
            doc="Weight of the auxiliary-head term `L_aux` (soft cross-entropy of the mixed teacher source "
            "probabilities).", reference=_REFERENCE,
        ),
        HyperParameter(
            "cls_lambda", 1e-4, "SMILE: weight of L_cls (1/2 squared norm of both heads).", low=0,
            search=(1e-6, 1e-2), log=True, doc="Weight of `L_cls`, half the squared L2 norm of both heads' "
            "parameters.", reference=_REFERENCE,
        ),
        HyperParameter(
            "ema_decay", 0.999, "SMILE: decay of the EMA (mean) teacher, in [0, 1].", low=0, high=1,
            search=(0.99, 0.9999), doc="Decay d of the mean teacher: `teacher <- d * teacher + (1 - d) * student` "
            "(backbone parameters only).", reference=_REFERENCE,
        ),
        HyperParameter(
            "ema_update_every", 10, "SMILE: optimizer steps between EMA updates.", type=int, low=1,
            doc="Optimizer steps between two EMA updates of the teacher. Use 1 with `ema_decay=0.999**0.1` for a "
            "per-step EMA with the same effective decay.", reference=_REFERENCE,
        ),
        HyperParameter(
            "ema_buffers", False, "SMILE: also average BatchNorm running statistics (the reference does not).",
            type=bool, doc="Also average floating-point buffers (BatchNorm running statistics). The reference does "
            "not.", reference=_REFERENCE,
        ),
        HyperParameter(
            "final_finetune_fraction", REFERENCE_FINAL_FINETUNE_FRACTION,
            "SMILE: fraction of steps at the end trained with plain fine-tuning (reference: 1000/9000).", low=0,
            high=1, high_open=True, search=(0.0, 0.3), doc="Fraction of the training steps, at the end, trained "
            "with plain fine-tuning (no mixing, no teacher, no EMA): the reference trains the last 1000 of 9000 "
            "iterations so.", reference=_REFERENCE,
        ),
    )  # fmt: skip
    default_mixing = "mixup"
    dominant_mix = True
    needs_teacher = True
    ema_teacher = True
    needs_source_head = True
    source_head_optional = True
    has_final_phase = True
    unlabeled_views = "mix"
    default_unlabeled_batch_ratio = 1.0

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        source_head = getattr(inputs.model, SOURCE_HEAD_NAME, None)  # None: a text source without a head, no L_aux
        heads = (inputs.adapter.head(inputs.model), *(() if source_head is None else (source_head,)))
        terms = {"cls": (self.cls_lambda, half_squared_norm(p for h in heads for p in h.parameters()))}
        if inputs.final_phase:
            return terms
        return {**terms, **self.teacher_terms(inputs.student, inputs.teacher, inputs.mix)}

    def unlabeled_loss_terms(self, inputs: UnlabeledInputs) -> LossTerms:
        """`L_aux` and `L_reg` of the unlabelled batch mixed among itself, with the same weights."""
        terms = self.teacher_terms(inputs.student, inputs.teacher, inputs.mix)
        return {f"{name}_unlabeled": value for name, value in terms.items()}

    def teacher_terms(self, student, teacher, mix) -> LossTerms:
        """`L_aux` (where the student has a source head) and `L_reg`: the terms that read the teacher and no label."""
        terms = {}
        if student.source_logits is not None:
            teacher_probs = torch.softmax(teacher.logits.float(), dim=-1)
            aux = soft_cross_entropy(student.source_logits.float(), mix_tensor(teacher_probs, mix))
            terms["aux"] = (self.aux_lambda, aux)
        if student.attention_mask is not None:  # text: last hidden states over the union mask ([`smile_hf.text`])
            distance = token_mixup_distance(student.feature_map, teacher.feature_map, student.attention_mask, mix)
        else:
            distance = feature_mixup_distance(student.feature_map, teacher.feature_map, mix)
        terms["reg"] = (self.reg_lambda, distance)
        return terms
