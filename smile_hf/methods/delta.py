# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""DELTA: DEep Learning Transfer using Feature Map with Attention for Convolutional Networks (Li, Xiong, Wang, Rao,
Liu, Chen, Huan; ICLR 2019, arXiv 1901.09229).

The student's feature maps are kept close to those of the frozen pre-trained model (the teacher, never updated,
eval mode) on the same input, channel by channel, each channel weighted by how much the pre-trained model needs it
to classify the target data. With F_s^j, F_t^j (B x C_j x H_j x W_j) the outputs of layer j of student and teacher
and a^j the channel attention of layer j (sum_c a^j_c = 1):

    Omega   = sum_j 1/2 sum_{b,c} C_j * a^j_c * ||F_t^j[b,c] - F_s^j[b,c]||^2 / (H_j * W_j)     (delta_attention)
    Omega   = sum_j 1/2 ||F_t^j - F_s^j||_F^2                                                  (no attention)
    L       = L_main + delta_alpha * Omega + l2sp_beta * 1/2 ||w_head||^2

summed over the batch, not averaged, with delta_alpha = l2sp_beta = 0.01: TLlib
`AttentionBehavioralRegularization` / `BehavioralRegularization` + `L2Regularization`
(`examples/task_adaptation/image_classification/delta.py`, which trains with weight decay 0).

Layers: the outputs of the last `delta_num_layers` (default 4) backbone stages, i.e. the last entries of the
model's `hidden_states` (for ViT-like models the patch tokens as a map, special tokens excluded). TLlib hooks the
last convolution of each of the 4 ResNet-50 stages (before its BatchNorm and the residual sum); the stage output is
the architecture-independent equivalent, and for a ResNet-50 it gives the same four stages.

Channel attention a^j, computed once, when training begins (before the first optimizer step; after a checkpoint is
restored, so a resumed run reuses the saved attention instead of recomputing it), with the frozen pre-trained
model in eval mode and the global random state left untouched:
  1. pooled features of the pre-trained backbone are computed over one pass of the training dataloader;
  2. a new linear classifier is trained on them (backbone frozen) for `delta_attention_epochs` (TLlib: 10) epochs:
     PyTorch's default init, SGD lr 0.01, momentum 0.9 Nesterov, no weight decay, batches of 32, the lr multiplied
     by 0.1 over 6 epochs (exponential decay per epoch), shuffling and init seeded by `seed` (TLlib
     `calculate_channel_attention` and its `--attention-*` defaults);
  3. for each of the first `delta_attention_batches` (TLlib: 10) training batches, each layer j and each channel c,
     the increase of the classifier's cross-entropy when channel c of layer j's output is set to zero (for every
     position; for token layouts every token, special tokens included):
        Delta^j_c = mean over batches of [CE(zeroed) - CE(intact)];
  4. z^j = (Delta^j - mean_c Delta^j) / std_c Delta^j (population std), a^j = softmax(z^j / 5)  (uniform if the
     std is 0).
With several processes, the features of step 2 are gathered from all processes and Delta is averaged over
processes, so every process uses the same attention. The attention is held in the regulariser's buffers and saved in
checkpoints (`method.attention.*`).
Two departures from TLlib, both towards the paper: TLlib sets `classifier.backbone.requires_grad = False`, a
no-op on a Module, so its "frozen" classifier actually fine-tunes the backbone for 10 epochs; here the backbone is
really frozen, which also lets its features be computed once. And TLlib zeroes a convolution's filter (the
channel then still carries the BatchNorm shift); here the channel of the hooked stage output itself is zeroed.
The cost of step 3 is one forward pass of the layers after layer j per channel of layer j and batch; channels are
processed in groups stacked along the batch dimension.

Under mixing the regulariser compares student and teacher on the same input, the one the student is trained on:
the teacher runs on the mixed images (for manifold mixup, with the same stage output mixed; `teacher_sees_mix`),
in the one teacher forward of the step. (Mixing the teacher's features of the unmixed images
instead would be SMILE's feature mixup, a different regulariser.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backbones import first_tensor, map_first_tensor
from .base import LossInputs, LossTerms, TransferMethod
from .buffers import BufferList
from .context import MethodContext, as_context, for_each_training_batch
from .hyperparameters import HyperParameter
from .l2sp import L2SP_BETA, head_penalty
from .registry import register_method

_TLLIB = "TLlib examples/task_adaptation/image_classification/delta.py"
ATTENTION_LR = 0.01
ATTENTION_MOMENTUM = 0.9
ATTENTION_BATCH_SIZE = 32
ATTENTION_LR_DECAY_EPOCHS = 6
ATTENTION_TEMPERATURE = 5.0
ATTENTION_SAMPLES_PER_PASS = 256
"""Channel importance: channels are zeroed in groups of about this many samples per forward pass."""


def behavioral_distance(student_maps, teacher_maps, attention=None) -> torch.Tensor:
    """Omega of the module docstring (float32): attention-weighted if `attention` is given, else plain."""
    total = 0.0
    for j, (student_map, teacher_map) in enumerate(zip(student_maps, teacher_maps, strict=True)):
        diff = student_map.float() - teacher_map.detach().float()
        if attention is None:
            total = total + 0.5 * diff.pow(2).sum()
            continue
        _, channels, height, width = diff.shape
        per_channel = diff.pow(2).sum(dim=(2, 3))  # B x C
        total = total + 0.5 * channels * (per_channel * attention[j].to(per_channel.device)).sum() / (height * width)
    return total


def attention_from_importance(importance: torch.Tensor, temperature: float = ATTENTION_TEMPERATURE) -> torch.Tensor:
    """softmax(z / temperature) with z the importance standardised over the layer's channels (population std)."""
    importance = importance.double()
    std = importance.std(unbiased=False)
    if not std > 0:
        return torch.full_like(importance, 1.0 / importance.numel()).float()
    z = (importance - importance.mean()) / std
    return torch.softmax(z / temperature, dim=0).float()


def train_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int, seed: int
) -> nn.Linear:
    """A linear classifier trained on fixed features (step 2 of the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(features.shape[1], num_classes)
    head = head.to(features.device)
    optimizer = torch.optim.SGD(head.parameters(), lr=ATTENTION_LR, momentum=ATTENTION_MOMENTUM, nesterov=True)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=math.exp(math.log(0.1) / ATTENTION_LR_DECAY_EPOCHS))
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(features), generator=generator).to(features.device)
            for start in range(0, len(features), ATTENTION_BATCH_SIZE):
                index = order[start : start + ATTENTION_BATCH_SIZE]
                loss = F.cross_entropy(head(features[index]), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            decay.step()
    return head.eval().requires_grad_(False)


def _channel_dim(adapter, state: torch.Tensor) -> int:
    """The channel dimension of a stage output: last for token layouts (B x N x C), 1 for maps (B x C x H x W)."""
    return -1 if adapter.spec.tokens and state.dim() == 3 else 1


def stage_output_channels(adapter, model, stage_indices, pixel_values) -> list[int]:
    """The number of channels of the outputs of the given stages (one forward pass on one image)."""
    stages, captured = adapter.stages(model), {}
    handles = [
        stages[i].register_forward_hook(lambda _m, _a, out, i=i: captured.__setitem__(i, first_tensor(out)))
        for i in stage_indices
    ]
    try:
        adapter.forward(model, pixel_values[:1])
    finally:
        for handle in handles:
            handle.remove()
    return [captured[i].shape[_channel_dim(adapter, captured[i])] for i in stage_indices]


def _zeroed_copies_hook(adapter, mask: torch.Tensor):
    """A forward hook stacking G copies of a stage output along the batch dimension, copy g multiplied channel-wise
    by row g of the G x C 0/1 `mask`."""

    def apply(state: torch.Tensor) -> torch.Tensor:
        shape = [1] * (state.dim() + 1)
        shape[0] = mask.shape[0]
        shape[_channel_dim(adapter, state) % state.dim() + 1] = mask.shape[1]
        copies = state.unsqueeze(0) * mask.view(shape).to(state.dtype)
        return copies.reshape(-1, *state.shape[1:])

    def hook(_module, _args, output):
        return map_first_tensor(output, apply)

    return hook


@torch.no_grad()
def channel_importance(teacher, head: nn.Module, stage_indices, batches, progress: bool = False) -> list[torch.Tensor]:
    """Delta^j_c (step 3): mean over `batches` of CE(channel c of stage j zeroed) - CE(intact), per stage index;
    with `progress`, a tqdm bar over the batches."""
    adapter, model = teacher.adapter, teacher.model
    stages = adapter.stages(model)
    channels = stage_output_channels(adapter, model, stage_indices, batches[0][0])

    def classify(pooled: torch.Tensor) -> torch.Tensor:  # the float32 probe on features of any dtype
        return head(pooled.float())

    totals = [torch.zeros(c, dtype=torch.float64, device=batches[0][0].device) for c in channels]
    for pixel_values, labels in tqdm(batches, desc="DELTA: channel importance", leave=False, disable=not progress):
        intact = F.cross_entropy(adapter.forward(model, pixel_values, source_head=classify).source_logits, labels)
        group = max(1, ATTENTION_SAMPLES_PER_PASS // len(pixel_values))
        for total, index, num_channels in zip(totals, stage_indices, channels):
            first = 0
            while first < num_channels:
                count = min(group, num_channels - first)
                mask = torch.ones(count, num_channels, device=pixel_values.device)
                mask[torch.arange(count), torch.arange(first, first + count)] = 0.0
                handle = stages[index].register_forward_hook(_zeroed_copies_hook(adapter, mask), prepend=True)
                try:
                    logits = adapter.forward(model, pixel_values, source_head=classify).source_logits
                    if len(logits) != count * len(labels):
                        raise ValueError("the model did not keep the stacked copies apart")
                except (RuntimeError, ValueError):
                    if count == 1:
                        raise
                    group = 1  # PVT, CvT: later layers reshape with the input's batch size; one channel per pass
                    continue
                finally:
                    handle.remove()
                zeroed = F.cross_entropy(logits, labels.repeat(count), reduction="none").view(count, -1).mean(dim=1)
                total[first : first + count] += (zeroed - intact).double()
                first += count
    return [total / len(batches) for total in totals]


@register_method
class Delta(TransferMethod):
    """DELTA (see the module docstring for the formula, the attention procedure and the reference)."""

    name = "delta"
    title = "DELTA"
    paper = (
        "Li, Xiong, Wang, Rao, Liu, Chen, Huan. DELTA: DEep Learning Transfer using Feature Map with "
        "Attention for Convolutional Networks. ICLR 2019, arXiv 1901.09229."
    )
    description = (
        "DELTA (Li et al., 2019) penalises the distance between the student's feature maps and those of the "
        "frozen pre-trained backbone, weighted by channel importance."
    )
    hyperparameters = (
        HyperParameter(
            "delta_alpha", 0.01, "DELTA: weight of the feature-map distance.", low=0, search=(1e-4, 1.0), log=True,
            doc="DELTA: weight of the feature-map distance to the frozen pre-trained backbone.", reference=_TLLIB,
        ),
        HyperParameter(
            "delta_attention", True, "DELTA: weight channels by their importance for the target task.", type=bool,
            doc="DELTA: weight channels by their importance for the target task (computed once before training).",
            reference=_TLLIB,
        ),
        HyperParameter(
            "delta_attention_batches", 10, "DELTA: batches used to measure channel importance.", type=int, low=1,
            doc="DELTA: batches used to measure each channel's importance.", reference=_TLLIB,
        ),
        HyperParameter(
            "delta_attention_epochs", 10,
            "DELTA: epochs of the linear classifier trained on frozen features for the attention.", type=int, low=1,
            doc="DELTA: epochs of training of the linear classifier (on frozen pre-trained features) whose loss "
            "increase measures each channel's importance (TLlib: 10).", reference=_TLLIB,
        ),
        HyperParameter(
            "delta_num_layers", 4, "DELTA: number of last backbone stages regularised.", type=int, low=1,
            doc="DELTA: number of backbone stages (counted from the last) whose outputs are regularised.",
            reference=_TLLIB,
        ),
        L2SP_BETA,
    )  # fmt: skip
    needs_teacher = True
    ema_teacher = False
    teacher_sees_mix = True
    needs_hidden_states = True

    def __init__(self, *args, **hyperparameters):
        super().__init__(*args, **hyperparameters)
        self.attention = BufferList()  # a^j of each regularised layer; empty until computed (or loaded)

    def num_layers(self, num_hidden_maps: int) -> int:
        """How many layers are regularised: the last `delta_num_layers` hidden maps (fewer if the model has fewer)."""
        return min(self.delta_num_layers, num_hidden_maps)

    def stage_indices(self, teacher, pixel_values: torch.Tensor) -> list[int]:
        """Indices of the stages whose outputs are the regularised hidden maps (the last ones: a model's hidden
        states end with its last stage's output)."""
        adapter, model = teacher.adapter, teacher.model
        num_stages = len(adapter.stages(model))
        num_maps = len(adapter.forward(model, pixel_values[:1], output_hidden_states=True).hidden_maps)
        if num_maps > num_stages:
            raise ValueError(f"{adapter.model_type}: {num_maps} hidden maps but {num_stages} stages, cannot align.")
        return list(range(num_stages - self.num_layers(num_maps), num_stages))

    @torch.no_grad()
    def prepare(self, context: MethodContext) -> None:
        """Compute the channel attention (module docstring, steps 1-4) with `context.teacher`, unless it is already
        known."""
        if len(self.attention) or not self.delta_attention:
            return
        context = as_context(context)
        teacher = context.teacher
        adapter, model = teacher.adapter, teacher.model
        features, labels = [], []

        def collect(pixel_values, batch_labels):
            features.append(adapter.forward(model, pixel_values).pooled.float())
            labels.append(batch_labels)

        for_each_training_batch(context, collect, desc="DELTA: backbone features")
        features = context.gather(torch.cat(features))
        labels = context.gather(torch.cat(labels))
        num_classes = adapter.head(context.model).out_features
        head = train_linear_probe(features, labels, num_classes, self.delta_attention_epochs, context.seed)

        batches = []
        for_each_training_batch(context, lambda x, y: batches.append((x, y)), self.delta_attention_batches)
        indices = self.stage_indices(teacher, batches[0][0])
        importance = channel_importance(teacher, head, indices, batches, progress=context.show_progress)
        for layer_importance in importance:
            self.attention.append(attention_from_importance(context.reduce(layer_importance, reduction="mean")))

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        attention = self.attention if len(self.attention) else None
        if self.delta_attention and attention is None:
            raise RuntimeError("DELTA's channel attention is not computed: call `prepare(context)` first.")
        num_layers = self.num_layers(len(inputs.student.hidden_maps))
        if attention is not None and len(attention) != num_layers:
            raise ValueError(f"DELTA has attention for {len(attention)} layers but regularises {num_layers}.")
        self.follow_device(inputs.labels.device)
        student_maps = inputs.student.hidden_maps[-num_layers:]
        teacher_maps = inputs.teacher.hidden_maps[-num_layers:]
        return {
            "delta": (self.delta_alpha, behavioral_distance(student_maps, teacher_maps, attention)),
            "head": (self.l2sp_beta, head_penalty(inputs)),
        }
