# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Mean Teacher (Tarvainen and Valpola, NeurIPS 2017, arXiv 1703.01780), the second semi-supervised baseline for
training with unlabelled images, as the authors' PyTorch code (`CuriousAI/mean-teacher`, `pytorch/main.py`) runs it.

The teacher is an exponential moving average of the student's weights, head included (theta'_t = alpha_t theta'_{t-1}
+ (1 - alpha_t) theta_t after optimizer step t, with alpha_t = min(1 - 1 / (t + 1), alpha): the true average until
the exponential one is more correct). Each unlabelled image u_b is read twice with the training transform, two
independent random draws (`TransformTwice`): the student sees one view, the teacher, without gradient and in training
mode as the reference runs it, the other. With C classes and w(t) the consistency weight:

    L_s = CE(student(x), y)                                                     (the trainer's L_main)
    L_c = 1 / (mu B) sum_b 1 / C || softmax(student(u_b)) - softmax(teacher(u'_b)) ||^2       (`softmax_mse_loss`)
    w(t) = consistency x exp(-5 (1 - min(t / T, 1))^2)                          (`sigmoid_rampup`; 1 when T = 0)
    L   = L_s + w(t) L_c

with the reference's CIFAR-10 settings (`experiments/cifar10_test.py`): consistency 100, alpha 0.97, a ramp-up over
the first 5 of 180 epochs (`mean_teacher_rampup` = 5/180 of training, here counted in steps) and 97 unlabelled images
per 31 labelled ones (`unlabeled_batch_ratio` 3).

Departures: the consistency term covers the unlabelled batch only (the reference's minibatch mixes 31 labelled and 97
unlabelled images and applies it to all 128, dividing by 128); the teacher starts as a copy of the student (the
reference starts it from its own random initialisation, which the true-average rule weights 1/2 after the first step);
the teacher's BatchNorm normalises with its batch statistics, as in the reference, but keeps no running statistics
(the reference's are never read either: its teacher always runs in training mode, and the evaluated model here is
the student); no second "residual" head (`logit_distance_cost`); the optimiser and schedule are the run's.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from .base import Regularizer, UnlabeledInputs
from .buffers import BufferDict
from .context import RegularizerContext, as_context
from .hyperparameters import HyperParameter
from .registry import register_regularizer

_REFERENCE = "Mean Teacher (Tarvainen and Valpola, 2017), CuriousAI/mean-teacher pytorch/experiments/cifar10_test.py"


def sigmoid_rampup(current: float, length: float) -> float:
    """`exp(-5 (1 - min(current / length, 1))^2)` (1 when `length` is 0): the reference's consistency ramp-up."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """`L_c`: the squared distance of the two softmax outputs, summed over classes, divided by the number of classes,
    averaged over the batch (the reference's `softmax_mse_loss` / batch size). No gradient reaches the teacher."""
    student_probs = torch.softmax(student_logits.float(), dim=-1)
    teacher_probs = torch.softmax(teacher_logits.detach().float(), dim=-1)
    return (student_probs - teacher_probs).square().sum(dim=-1).mean() / student_logits.shape[-1]


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of `model` that training updates, by name (the ones the teacher averages)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class _Logits(nn.Module):
    """The logits of `adapter.forward(model, images)` as a module, so that `functional_call` swaps the model's
    weights."""

    def __init__(self, model: nn.Module, adapter):
        super().__init__()
        self.model, self.adapter = model, adapter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward(self.model, images).logits


@register_regularizer
class MeanTeacher(Regularizer):
    """Mean Teacher's consistency term (see the module docstring)."""

    name = "mean_teacher"
    title = "Mean Teacher"
    paper = (
        "Tarvainen, Valpola. Mean teachers are better role models: Weight-averaged consistency targets improve "
        "semi-supervised deep learning results. NeurIPS 2017 (arXiv 1703.01780)."
    )
    description = (
        "Mean Teacher (Tarvainen and Valpola, 2017) trains on labelled images with cross-entropy and asks the "
        "student's class probabilities on each unlabelled image to match those of a teacher, an exponential moving "
        "average of the student's weights, on a second random view of the same image (a squared distance whose weight "
        "ramps up over the start of training, `loss_consistency`)."
    )
    hyperparameters = (
        HyperParameter(
            "mean_teacher_consistency", 100.0, "Mean Teacher: weight of the consistency term once ramped up.", low=0,
            search=(1.0, 300.0), log=True, doc="Weight of the consistency term `L_c` after the ramp-up.",
            reference=_REFERENCE,
        ),
        HyperParameter(
            "mean_teacher_ema_decay", 0.97, "Mean Teacher: EMA decay alpha of the teacher's weights, in [0, 1).",
            low=0, high=1, high_open=True, search=(0.9, 0.999), doc="EMA decay `alpha` of the teacher's weights "
            "(the true average `1 - 1/(t + 1)` is used while it is smaller).", reference=_REFERENCE,
        ),
        HyperParameter(
            "mean_teacher_rampup", 5 / 180, "Mean Teacher: fraction of training over which the consistency weight "
            "ramps up, in [0, 1].", low=0, high=1, doc="Fraction of the training steps over which the consistency "
            "weight ramps up as `exp(-5 (1 - t/T)^2)` (the reference: 5 of 180 epochs).", reference=_REFERENCE,
        ),
    )  # fmt: skip
    unlabeled_views = "two_views"
    requires_unlabeled = True
    default_unlabeled_batch_ratio = 3.0  # the reference's 97 unlabelled images per 31 labelled ones

    def __init__(self, *args, **hyperparameters):
        super().__init__(*args, **hyperparameters)
        self.teacher_weights = BufferDict()

    def setup(self, context: RegularizerContext) -> None:
        """The teacher starts as a copy of the student's trainable weights (unless already taken)."""
        if len(self.teacher_weights):
            return
        for name, p in trainable_parameters(as_context(context).model).items():
            self.teacher_weights[name] = p.detach().clone()

    def on_step_end(self, context: RegularizerContext, step: int, max_steps: int) -> None:
        """theta' <- alpha_t theta' + (1 - alpha_t) theta, alpha_t = min(1 - 1 / (step + 1), alpha)."""
        alpha = min(1.0 - 1.0 / (step + 1), self.mean_teacher_ema_decay)
        params = trainable_parameters(as_context(context).model)
        self.follow_device(next(iter(params.values())).device)
        shadow = [self.teacher_weights[name] for name in params]
        with torch.no_grad():  # the reference's mul_ then add_, over all tensors at once
            torch._foreach_mul_(shadow, alpha)
            torch._foreach_add_(shadow, [p.detach() for p in params.values()], alpha=1.0 - alpha)

    def teacher_logits(self, inputs: UnlabeledInputs) -> torch.Tensor:
        """The teacher's logits on the second view: the student's modules run with the averaged weights (and copies of
        its buffers, which a training-mode BatchNorm would otherwise update), without gradient."""
        if not len(self.teacher_weights):
            raise RuntimeError(
                "Mean Teacher has no teacher: call `setup(context)` before training (SmileTrainer.train does)."
            )
        model = inputs.model
        self.follow_device(inputs.other_view.device)
        state = {f"model.{name}": value for name, value in self.teacher_weights.items()}
        state.update({f"model.{name}": b.clone() for name, b in model.named_buffers()})
        with torch.no_grad():
            return functional_call(_Logits(model, inputs.adapter), state, (inputs.other_view,))

    def consistency_weight(self, step: int, max_steps: int) -> float:
        """w(t) = consistency x sigmoid_rampup(step, rampup x max_steps)."""
        return self.mean_teacher_consistency * sigmoid_rampup(step, self.mean_teacher_rampup * max_steps)

    def unlabeled_loss_terms(self, inputs: UnlabeledInputs):
        loss = softmax_mse(inputs.student.logits, self.teacher_logits(inputs))
        return {"consistency": (self.consistency_weight(inputs.step, inputs.max_steps), loss)}

    def unlabeled_statistics(self, inputs: UnlabeledInputs) -> dict[str, torch.Tensor]:
        """`consistency_weight`: w(t) of this step."""
        return {"consistency_weight": torch.tensor(self.consistency_weight(inputs.step, inputs.max_steps))}
