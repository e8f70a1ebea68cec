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
"""

from __future__ import annotations

import torch

from ..backbones import SOURCE_HEAD_NAME
from ..mixing import mix_tensor, soft_cross_entropy
from .base import LossInputs, LossTerms, TransferMethod, half_squared_norm
from .registry import register_method


def feature_mixup_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, mix) -> torch.Tensor:
    """L_reg: Frobenius norm of mix(F_t) - F_s over the whole batch, divided by the spatial size H * W."""
    height, width = student_map.shape[-2:]
    target = mix_tensor(teacher_map.detach(), mix).to(student_map.dtype)
    return torch.linalg.vector_norm(target - student_map) / (height * width)


@register_method
class Smile(TransferMethod):
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
        "reg_lambda", "aux_lambda", "cls_lambda", "ema_decay", "ema_update_every", "ema_buffers",
        "final_finetune_fraction",
    )  # fmt: skip
    default_mixing = "mixup"
    dominant_mix = True
    needs_teacher = True
    ema_teacher = True
    needs_source_head = True
    has_final_phase = True

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        heads = (inputs.adapter.head(inputs.model), getattr(inputs.model, SOURCE_HEAD_NAME))
        terms = {"cls": (self.args.cls_lambda, half_squared_norm(p for h in heads for p in h.parameters()))}
        if inputs.final_phase:
            return terms
        teacher_probs = torch.softmax(inputs.teacher.logits.float(), dim=-1)
        terms["aux"] = (
            self.args.aux_lambda,
            soft_cross_entropy(inputs.student.source_logits.float(), mix_tensor(teacher_probs, inputs.mix)),
        )
        terms["reg"] = (
            self.args.reg_lambda,
            feature_mixup_distance(inputs.student.feature_map, inputs.teacher.feature_map, inputs.mix),
        )
        return terms
