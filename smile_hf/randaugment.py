# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The strong augmentation of FixMatch (Sohn et al., 2020): RandAugment with random magnitudes (the paper's "RA"
variant) followed by Cutout, on batches of normalised image tensors, with torch only.

Each image gets `num_ops` operations drawn uniformly from [`RANDAUGMENT_OPS`], each with a magnitude drawn uniformly
in [0, 1] (mapped to the operation's range, as in the FixMatch paper's Table 12), then one Cutout square of side
`U(0, cutout) x` the shorter image side, filled with grey (0.5). Every draw comes from the `generator` passed in, so
that the same (seed, step, micro-batch, rank) gives the same views, also in a resumed run.

Departures from the paper's list: Equalize (histogram equalisation per channel) and Sharpness are left out (the
other twelve operations are there); the geometric operations interpolate bilinearly on the tensor instead of PIL's
nearest neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

RANDAUGMENT_OPS = (
    "identity", "autocontrast", "brightness", "color", "contrast", "posterize", "solarize", "rotate", "shear_x",
    "shear_y", "translate_x", "translate_y",
)  # fmt: skip
"""The operations drawn from (FixMatch's RandAugment pool without Equalize and Sharpness)."""


def _blend(image: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (other + factor * (image - other)).clamp(0.0, 1.0)


def _grey(image: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
    if image.shape[0] != 3:
        return image.mean(0, keepdim=True)
    return (image * weights[:, None, None]).sum(0, keepdim=True)


def _affine(image: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    theta = torch.tensor([matrix], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    filled = F.grid_sample(image[None] - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (filled[0] + 0.5).clamp(0.0, 1.0)  # outside the image: grey


def apply_op(image: torch.Tensor, op: str, magnitude: float, sign: float) -> torch.Tensor:
    """One RandAugment operation on one image in [0, 1] (C x H x W); `magnitude` in [0, 1], `sign` +-1 for the
    signed operations. Ranges as in the FixMatch paper (Table 12)."""
    if op == "identity":
        return image
    if op == "autocontrast":
        low = image.amin(dim=(1, 2), keepdim=True)
        high = image.amax(dim=(1, 2), keepdim=True)
        return ((image - low) / (high - low).clamp_min(1e-6)).where(high > low, image)
    if op in ("brightness", "color", "contrast"):
        factor = 0.05 + 0.9 * magnitude  # B in [0.05, 0.95] (PIL's enhance factor: 0 grey / black, 1 unchanged)
        if op == "brightness":
            return _blend(image, torch.zeros_like(image), factor)
        grey = _grey(image)
        return _blend(image, grey.expand_as(image) if op == "color" else grey.mean().expand_as(image), factor)
    if op == "posterize":
        bits = 4 + round(4 * magnitude)  # B in [4, 8]
        shift = 2 ** (8 - bits)
        return torch.floor(image * 255.0 / shift) * shift / 255.0
    if op == "solarize":
        threshold = magnitude  # T in [0, 1]
        return torch.where(image < threshold, image, 1.0 - image)
    if op == "rotate":
        angle = math.radians(30.0 * magnitude * sign)  # theta in [-30, 30] degrees
        cos, sin = math.cos(angle), math.sin(angle)
        return _affine(image, [[cos, -sin, 0.0], [sin, cos, 0.0]])
    if op in ("shear_x", "shear_y"):
        shear = 0.3 * magnitude * sign  # R in [-0.3, 0.3]
        return _affine(image, [[1.0, shear, 0.0], [0.0, 1.0, 0.0]] if op == "shear_x" else [[1.0, 0.0, 0.0], [shear, 1.0, 0.0]])
    if op in ("translate_x", "translate_y"):
        shift = 2 * 0.3 * magnitude * sign  # lambda in [-0.3, 0.3] of the size; the grid spans 2
        return _affine(image, [[1.0, 0.0, shift], [0.0, 1.0, 0.0]] if op == "translate_x" else [[1.0, 0.0, 0.0], [0.0, 1.0, shift]])
    raise ValueError(f"Unknown RandAugment operation '{op}'; known: {', '.join(RANDAUGMENT_OPS)}.")


def cutout(image: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A grey square of side `fraction x` the shorter side, at a uniform centre (clipped to the image)."""
    height, width = image.shape[-2:]
    side = int(round(fraction * min(height, width)))
    if side <= 0:
        return image
    cy, cx = (int(torch.randint(0, n, (), generator=generator)) for n in (height, width))
    image = image.clone()
    image[:, max(cy - side // 2, 0) : cy + (side + 1) // 2, max(cx - side // 2, 0) : cx + (side + 1) // 2] = 0.5
    return image


def strong_augment(
    pixel_values: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
    num_ops: int = 2,
    max_cutout: float = 0.5,
) -> torch.Tensor:
    """The strong view of a batch of normalised images (B x C x H x W): undo the normalisation (`mean`, `std`),
    apply `num_ops` random operations of [`RANDAUGMENT_OPS`] with random magnitudes and a Cutout of side
    `U(0, max_cutout)` of the image to each image, normalise again. Draws come from `generator` (on the CPU)."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=pixel_values.device).view(shape)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=pixel_values.device).view(shape)
    images = (pixel_values.float() * std_t + mean_t).clamp(0.0, 1.0)
    out = []
    for image in images:
        for _ in range(num_ops):
            op = RANDAUGMENT_OPS[int(torch.randint(0, len(RANDAUGMENT_OPS), (), generator=generator))]
            magnitude = float(torch.rand((), generator=generator))
            sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
            image = apply_op(image, op, magnitude, sign)
        out.append(cutout(image, max_cutout * float(torch.rand((), generator=generator)), generator))
    return ((torch.stack(out) - mean_t) / std_t).to(pixel_values.dtype)
