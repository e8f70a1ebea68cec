# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""DELTA: DEep Learning Transfer using Feature Map with Attention for Convolutional Networks (Li, Xiong, Wang, Rao,
Liu, Chen, Huan; ICLR 2019, arXiv 1901.09229), as the SMILE reference runs it (`method="delta"`).

The student's feature maps are kept close to those of the frozen pre-trained model (the teacher, never updated,
eval mode) on the same input, channel by channel, each channel weighted by how much the pre-trained model needs it
to classify the target data. Two references disagree on where and at which scale; each is offered on its own,
never mixed:

- `delta` (this module) follows the SMILE reference (lixingjian/SMILE `finetune.py`, `FinetuneDELTA`), the DELTA
  SMILE's results were compared against. With F_s, F_t (B x C x H x W) the output of the LAST backbone stage of
  student and teacher (ResNet-50's `layer4`; for ViT-like models the patch tokens as a map, special tokens
  excluded) and a its channel attention (sum_c a_c = 1):

      Omega = sum_b sum_c a_c * ||F_s[b,c] - F_t[b,c]||^2 / (H * W)      (summed over the batch, not averaged)

  For a text model F is the last layer's B x T x D output, its channels the D hidden units, and the positions of
  sequence b are the n_b tokens its attention mask keeps: sum_b sum_c a_c * sum_{t kept} dF[b,t,c]^2 / n_b.
      L     = L_main + delta_alpha * Omega

  No 1/2, no C factor, no head term (the reference applies its weight decay, 1e-4, to every parameter, the head
  included). `delta_alpha` defaults to 0.001, the reference's `alpha_delta` for FGVC-Aircraft and Stanford Cars
  (`task_config.ini`; CUB-200-2011 uses 0.01). Without attention (`delta_attention=False`) a_c = 1/C, the attention
  of channels that are all equally important.
- `delta_tllib` ([`~smile_hf.methods.delta_tllib`]) follows TLlib: the output of the last convolution of each
  stage (before its BatchNorm and the residual sum), 1/2 * C * a_c scale, head L2, weight 0.01; ResNet only.

Channel attention a (of each regularised layer), computed once, when training begins (before the first optimizer
step; after a checkpoint is restored, so a resumed run reuses the saved attention instead of recomputing it), with
the frozen pre-trained model in eval mode and the global random state left untouched (the procedure of TLlib
`calculate_channel_attention`; the SMILE reference loads the same softmax(importance / 5) precomputed per dataset):
  1. pooled features of the pre-trained backbone are computed over one pass of the training dataloader;
  2. a new linear classifier is trained on them (backbone frozen) for `delta_attention_epochs` (TLlib: 10) epochs:
     PyTorch's default init, SGD lr 0.01, momentum 0.9 Nesterov, no weight decay, batches of 32, the lr multiplied
     by 0.1 over 6 epochs (exponential decay per epoch), shuffling and init seeded by `seed` (TLlib
     `calculate_channel_attention` and its `--attention-*` defaults);
  3. for each of the first `delta_attention_batches` (TLlib: 10) training batches, each regularised layer j and each
     channel c, the increase of the classifier's cross-entropy when channel c of layer j's output is set to zero (for
     every position; for token layouts every token, special tokens included):
        Delta^j_c = mean over batches of [CE(zeroed) - CE(intact)];
  4. z^j = (Delta^j - mean_c Delta^j) / std_c Delta^j (population std), a^j = softmax(z^j / 5)  (uniform if the
     std is 0).
With several processes, the features of step 2 are gathered from all processes and Delta is averaged over
processes, so every process uses the same attention. The attention is held in the regulariser's buffers and saved in
checkpoints (`method.attention.*`).
TLlib sets `classifier.backbone.requires_grad = False`, a no-op on a Module, so its "frozen" classifier actually
fine-tunes the backbone for 10 epochs; here the backbone is really frozen (as in the paper), which also lets its
features be computed once.
The cost of step 3 is one forward pass of the layers after layer j per channel of layer j and batch; channels are
processed in groups stacked along the batch dimension where the model allows it.

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

from ..backbones import first_tensor, map_first_tensor, record_outputs, stop_recording
from ..text import masked_attention_weighted_distance
from .base import LossInputs, LossTerms, Regularizer
from .buffers import BufferList
from .context import RegularizerContext, as_context, first_inputs, for_each_training_batch
from .hyperparameters import HyperParameter
from .registry import register_regularizer

_TLLIB = "TLlib examples/task_adaptation/image_classification/delta.py"
_SMILE_REF = "lixingjian/SMILE finetune.py, task_config.ini (FGVC-Aircraft, Stanford Cars)"
ATTENTION_LR = 0.01
ATTENTION_MOMENTUM = 0.9
ATTENTION_BATCH_SIZE = 32
ATTENTION_LR_DECAY_EPOCHS = 6
ATTENTION_TEMPERATURE = 5.0
ATTENTION_SAMPLES_PER_PASS = 256
"""Channel importance: channels are zeroed in groups of about this many samples per forward pass."""


def attention_weighted_distance(student_map: torch.Tensor, teacher_map: torch.Tensor, attention: torch.Tensor):
    """sum_{b,c} a_c * ||F_s[b,c] - F_t[b,c]||^2 / (H * W) of one layer (float32; the teacher's map detached)."""
    diff = student_map.float() - teacher_map.detach().float()
    per_channel = diff.pow(2).sum(dim=(2, 3)) / (diff.shape[2] * diff.shape[3])  # B x C
    return (per_channel * attention.to(per_channel.device)).sum()


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


def output_channels(adapter, model, modules, pixel_values) -> list[int]:
    """The number of channels of the outputs of `modules` (one forward pass of `model` on one image)."""
    outputs = [[] for _ in modules]
    for module, sink in zip(modules, outputs):
        record_outputs(module, sink)
    try:
        adapter.forward(model, first_inputs(pixel_values, 1))
    finally:
        for module, sink in zip(modules, outputs):
            stop_recording(module, sink)
    last = [first_tensor(sink[-1]) for sink in outputs]
    return [state.shape[_channel_dim(adapter, state)] for state in last]


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
def channel_importance(teacher, head: nn.Module, modules, batches, progress: bool = False) -> list[torch.Tensor]:
    """Delta^j_c (step 3): mean over `batches` of CE(channel c of the output of `modules[j]` zeroed) - CE(intact),
    per module of the teacher; with `progress`, a tqdm bar over the batches."""
    adapter, model = teacher.adapter, teacher.model
    channels = output_channels(adapter, model, modules, batches[0][0])

    def classify(pooled: torch.Tensor) -> torch.Tensor:  # the float32 probe on features of any dtype
        return head(pooled.float())

    totals = [torch.zeros(c, dtype=torch.float64, device=batches[0][1].device) for c in channels]
    for pixel_values, labels in tqdm(batches, desc="DELTA: channel importance", leave=False, disable=not progress):
        intact = F.cross_entropy(adapter.forward(model, pixel_values, source_head=classify).source_logits, labels)
        group = max(1, ATTENTION_SAMPLES_PER_PASS // len(labels))
        for total, module, num_channels in zip(totals, modules, channels):
            first = 0
            while first < num_channels:
                count = min(group, num_channels - first)
                mask = torch.ones(count, num_channels, device=labels.device)
                mask[torch.arange(count), torch.arange(first, first + count)] = 0.0
                handle = module.register_forward_hook(_zeroed_copies_hook(adapter, mask), prepend=True)
                try:
                    logits = adapter.forward(model, pixel_values, source_head=classify).source_logits
                    if len(logits) != count * len(labels):
                        raise ValueError("the model did not keep the stacked copies apart")
                except (RuntimeError, ValueError):
                    if count == 1:
                        raise
                    group = 1  # PVT, CvT, a residual branch: the rest needs the input's batch size; one channel per pass
                    continue
                finally:
                    handle.remove()
                zeroed = F.cross_entropy(logits, labels.repeat(count), reduction="none").view(count, -1).mean(dim=1)
                total[first : first + count] += (zeroed - intact).double()
                first += count
    return [total / len(batches) for total in totals]


DELTA_ATTENTION = (
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
)  # fmt: skip
"""The attention hyperparameters, shared by both DELTA variants."""


class ChannelAttentionRegularizer(Regularizer):
    """What both DELTA variants share: a frozen teacher ([`FixedTeacher`]) on the student's (mixed) input, and the
    channel attention of the regularised layers (`hook_points`), computed once by `prepare` (module docstring, steps 1-4)."""

    paper = (
        "Li, Xiong, Wang, Rao, Liu, Chen, Huan. DELTA: DEep Learning Transfer using Feature Map with "
        "Attention for Convolutional Networks. ICLR 2019, arXiv 1901.09229."
    )
    needs_teacher = True
    ema_teacher = False
    teacher_sees_mix = True

    def __init__(self, *args, **hyperparameters):
        super().__init__(*args, **hyperparameters)
        self.attention = BufferList()  # a^j of each regularised layer; empty until computed (or loaded)

    def hook_points(self, adapter, model: nn.Module) -> list[nn.Module]:
        """The modules of `model` whose outputs are regularised, in forward order."""
        raise NotImplementedError

    @torch.no_grad()
    def prepare(self, context: RegularizerContext) -> None:
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
        modules = self.hook_points(adapter, model)
        importance = channel_importance(teacher, head, modules, batches, progress=context.show_progress)
        for layer_importance in importance:
            self.attention.append(attention_from_importance(context.reduce(layer_importance, reduction="mean")))

    def layer_attention(self, num_layers: int) -> list[torch.Tensor] | None:
        """The attention of each of the `num_layers` regularised layers (None without attention), checked."""
        if not self.delta_attention:
            return None
        if not len(self.attention):
            raise RuntimeError("DELTA's channel attention is not computed: call `prepare(context)` first.")
        if len(self.attention) != num_layers:
            raise ValueError(f"DELTA has attention for {len(self.attention)} layers but regularises {num_layers}.")
        return list(self.attention)


@register_regularizer
class Delta(ChannelAttentionRegularizer):
    """DELTA as the SMILE reference runs it: the last stage's output, sum_{b,c} a_c ||dF||^2 / (H W), weight 0.001
    (see the module docstring)."""

    name = "delta"
    title = "DELTA"
    description = (
        "DELTA (Li et al., 2019), as the SMILE reference runs it, penalises the distance between the student's "
        "last-stage feature map and that of the frozen pre-trained backbone, weighted by channel importance."
    )
    hyperparameters = (
        HyperParameter(
            "delta_alpha", 0.001, "DELTA: weight of the last-stage feature-map distance.", low=0, search=(1e-4, 1e-1),
            log=True, doc="DELTA: weight of sum_{b,c} a_c ||F_s - F_t||^2 / (H W) on the last stage's output (the SMILE "
            "reference's alpha_delta; CUB-200-2011 uses 0.01).", reference=_SMILE_REF,
        ),
        *DELTA_ATTENTION,
    )  # fmt: skip
    needs_hidden_states = True

    def hook_points(self, adapter, model: nn.Module) -> list[nn.Module]:
        """The last stage (its output is the last hidden map)."""
        return [adapter.stages(model)[-1]]

    def loss_terms(self, inputs: LossInputs) -> LossTerms:
        attention = self.layer_attention(1)
        self.follow_device(inputs.labels.device)
        student_map, teacher_map = inputs.student.hidden_maps[-1], inputs.teacher.hidden_maps[-1]
        mask = inputs.student.attention_mask  # text: B x T x D states over the kept tokens
        channels = student_map.shape[1 if mask is None else -1]
        weights = attention[0] if attention is not None else torch.full((channels,), 1.0 / channels)
        if mask is not None:
            return {"delta": (self.delta_alpha, masked_attention_weighted_distance(student_map, teacher_map, mask, weights))}
        return {"delta": (self.delta_alpha, attention_weighted_distance(student_map, teacher_map, weights))}
