# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Mixing of samples within a batch: mixup (Zhang et al., 2018), CutMix (Yun et al., 2019) and manifold mixup
(Verma et al., 2019), with the mixed cross-entropy that goes with them.

A [`Mix`] is drawn once per batch from a NumPy generator derived from (seed, step, micro-batch, rank), so runs and
resumed runs draw the same mixes without any generator state to save. Labels stay hard: the loss mixes two
cross-entropies instead of building soft targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MIXING_STRATEGIES = ("mixup", "cutmix", "manifold_mixup")
MIXING_TITLES = {"mixup": "mixup", "cutmix": "CutMix", "manifold_mixup": "manifold mixup"}
"""Readable name of each strategy (model cards)."""
MIXING_HYPERPARAMETERS = {"mixup": ("mixup_alpha",), "manifold_mixup": ("mixup_alpha",), "cutmix": ("cutmix_alpha",)}
"""The `SmileTrainingArguments` fields each strategy reads."""


@dataclass
class Mix:
    """One draw of a mixing strategy for a batch.

    Attributes:
        strategy: `"mixup"`, `"cutmix"` or `"manifold_mixup"`.
        lam: weight of the original sample (for CutMix: the share of the image area it keeps).
        perm: LongTensor permutation of the batch; sample `i` is mixed with sample `perm[i]`.
        box: CutMix only, `(top, bottom, left, right)` of the pasted region.
        stage: manifold mixup only, the backbone stage whose output is mixed (0 mixes the input).
    """

    strategy: str
    lam: float
    perm: torch.Tensor
    box: tuple[int, int, int, int] | None = None
    stage: int = 0

    def to(self, device: torch.device | str) -> Mix:
        """The mix with its permutation on `device`. To a CUDA device the permutation goes from pinned memory with a
        non-blocking copy, so that drawing a mix never makes the host wait for the device."""
        device, perm = torch.device(device), self.perm
        if device.type == "cuda" and perm.device.type == "cpu":
            perm = perm.pin_memory().to(device, non_blocking=True)
        return Mix(self.strategy, self.lam, perm.to(device), self.box, self.stage)


def mixing_generator(seed: int, step: int, micro_step: int = 0, rank: int = 0, stream: int = 0) -> np.random.Generator:
    """A NumPy generator determined by the training position, so that resumed runs mix identically; `stream` > 0
    gives another generator for the same position (the unlabelled batch's mix)."""
    return np.random.default_rng([seed, step, micro_step, rank] + ([stream] if stream else []))


def sample_lambda(alpha: float, rng: np.random.Generator, dominant: bool = False) -> float:
    """lambda ~ Beta(alpha, alpha); with `dominant`, max(lambda, 1 - lambda) (SMILE's convention)."""
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam) if dominant else lam


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of side ratio sqrt(1 - lambda) with a uniform centre, clipped to the image (as in timm)."""
    cut_h, cut_w = int(height * math.sqrt(1.0 - lam)), int(width * math.sqrt(1.0 - lam))
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def sample_mix(
    strategy: str,
    alpha: float,
    batch_size: int,
    rng: np.random.Generator,
    *,
    image_hw: tuple[int, int] | None = None,
    num_stages: int = 0,
    dominant: bool = False,
) -> Mix:
    """Draw lambda, a permutation and (CutMix) a box or (manifold mixup) a stage for one batch.

    For CutMix, lambda is corrected to the area the original image really keeps after clipping.
    For manifold mixup, the stage is uniform over {0 (input), 1, ..., num_stages - 1}: stage k > 0 mixes the
    output of stage k - 1.
    """
    if strategy not in MIXING_STRATEGIES:
        raise ValueError(f"Unknown mixing strategy '{strategy}'; known: {', '.join(MIXING_STRATEGIES)}.")
    lam = sample_lambda(alpha, rng, dominant)
    perm = torch.from_numpy(rng.permutation(batch_size))
    if strategy == "cutmix":
        if image_hw is None:
            raise ValueError("CutMix needs the image size.")
        box = cutmix_box(lam, *image_hw, rng)
        area = (box[1] - box[0]) * (box[3] - box[2])
        return Mix(strategy, 1.0 - area / (image_hw[0] * image_hw[1]), perm, box=box)
    if strategy == "manifold_mixup":
        return Mix(strategy, lam, perm, stage=int(rng.integers(0, max(num_stages, 1))))
    return Mix(strategy, lam, perm)


def mix_tensor(tensor: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """lambda * t + (1 - lambda) * t[perm] (for inputs, features, probabilities), as one `lerp` from t[perm]; `t`
    itself without a mix (an unmixed batch: evaluation)."""
    if mix is None:
        return tensor
    return torch.lerp(tensor.index_select(0, mix.perm), tensor, mix.lam)


def paste_box(images: torch.Tensor, mix: Mix) -> torch.Tensor:
    """CutMix: the images with the box region taken from the permuted images."""
    top, bottom, left, right = mix.box
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[mix.perm][..., top:bottom, left:right]
    return mixed


def mix_inputs(pixel_values: torch.Tensor, mix: Mix) -> torch.Tensor:
    """The model input for `mix`: mixed images (mixup, CutMix, manifold mixup at stage 0) or unchanged."""
    if mix.strategy == "cutmix":
        return paste_box(pixel_values, mix)
    if mix.strategy == "mixup" or mix.stage == 0:
        return mix_tensor(pixel_values, mix)
    return pixel_values


def mixed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """lambda * CE(logits, y) + (1 - lambda) * CE(logits, y[perm]), batch means; plain CE without a mix.

    With `label_smoothing` eps, each CE is `F.cross_entropy(..., label_smoothing=eps)` (the stock Trainer's
    `label_smoothing_factor`): (1 - eps) * NLL + eps * mean over the classes of -log p; the uniform part is the same
    for both targets, so it is added once."""
    if mix is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    log_probs = F.log_softmax(logits, dim=-1)  # once for both labels
    nll = mix.lam * F.nll_loss(log_probs, labels) + (1.0 - mix.lam) * F.nll_loss(log_probs, labels[mix.perm])
    if not label_smoothing:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=-1).mean()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """H(q, z) = mean over the batch of sum_k -q_k * log_softmax(z)_k."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
