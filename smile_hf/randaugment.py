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

from collections.abc import Sequence

import torch
import torch.nn.functional as F

RANDAUGMENT_OPS = (
    "identity", "autocontrast", "brightness", "color", "contrast", "posterize", "solarize", "rotate", "shear_x",
    "shear_y", "translate_x", "translate_y",
)  # fmt: skip
"""The operations drawn from (FixMatch's RandAugment pool without Equalize and Sharpness)."""


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (other + _per_image(factor) * (images - other)).clamp(0.0, 1.0)


def _grey(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] != 3:
        return images.mean(1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image through its 2 x 3 affine map (in the [-1, 1] grid), grey outside the image."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    filled = F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (filled + 0.5).clamp(0.0, 1.0)


def _theta(n: int, device, **entries: torch.Tensor) -> torch.Tensor:
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    positions = {"a": (0, 0), "b": (0, 1), "tx": (0, 2), "c": (1, 0), "d": (1, 1), "ty": (1, 2)}
    for name, value in entries.items():
        theta[:, positions[name][0], positions[name][1]] = value
    return theta


def apply_op(images: torch.Tensor, op: str, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One RandAugment operation on images in [0, 1] (N x C x H x W), each with its `magnitude` in [0, 1] and its
    `sign` (+-1, for the signed operations), both of shape (N,). Ranges as in the FixMatch paper (Table 12)."""
    n, device = images.shape[0], images.device
    if op == "identity":
        return images
    if op == "autocontrast":
        low, high = images.amin(dim=(2, 3), keepdim=True), images.amax(dim=(2, 3), keepdim=True)
        return ((images - low) / (high - low).clamp_min(1e-6)).where(high > low, images)
    if op in ("brightness", "color", "contrast"):
        factor = 0.05 + 0.9 * magnitude  # B in [0.05, 0.95] (PIL's enhance factor: 0 grey / black, 1 unchanged)
        if op == "brightness":
            return _blend(images, torch.zeros_like(images), factor)
        grey = _grey(images)
        other = grey if op == "color" else grey.mean(dim=(1, 2, 3), keepdim=True)
        return _blend(images, other.expand_as(images), factor)
    if op == "posterize":
        shift = _per_image(2.0 ** (8 - (4 + torch.round(4 * magnitude))))  # B in [4, 8] bits
        return torch.floor(images * 255.0 / shift) * shift / 255.0
    if op == "solarize":
        threshold = _per_image(magnitude)  # T in [0, 1]
        return torch.where(images < threshold, images, 1.0 - images)
    if op == "rotate":
        angle = torch.deg2rad(30.0 * magnitude * sign)  # theta in [-30, 30] degrees
        cos, sin = torch.cos(angle), torch.sin(angle)
        return _affine(images, _theta(n, device, a=cos, b=-sin, c=sin, d=cos))
    if op in ("shear_x", "shear_y"):
        shear = 0.3 * magnitude * sign  # R in [-0.3, 0.3]
        return _affine(images, _theta(n, device, **({"b": shear} if op == "shear_x" else {"c": shear})))
    if op in ("translate_x", "translate_y"):
        shift = 2 * 0.3 * magnitude * sign  # lambda in [-0.3, 0.3] of the size; the grid spans 2
        return _affine(images, _theta(n, device, **({"tx": shift} if op == "translate_x" else {"ty": shift})))
    raise ValueError(f"Unknown RandAugment operation '{op}'; known: {', '.join(RANDAUGMENT_OPS)}.")


def cutout(images: torch.Tensor, fraction: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """In each image, a grey square of side `fraction x` the shorter side (one fraction per image), at a uniform
    centre, clipped to the image."""
    n, _, height, width = images.shape
    side = torch.round(fraction * min(height, width))
    cy = torch.randint(0, height, (n,), generator=generator).float()
    cx = torch.randint(0, width, (n,), generator=generator).float()
    rows, cols = torch.arange(height).view(1, -1), torch.arange(width).view(1, -1)
    top, left = (cy - torch.div(side, 2, rounding_mode="floor")).view(-1, 1), (cx - torch.div(side, 2, rounding_mode="floor")).view(-1, 1)
    inside_rows = (rows >= top) & (rows < top + side.view(-1, 1))
    inside_cols = (cols >= left) & (cols < left + side.view(-1, 1))
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None].to(images.device)
    return images.masked_fill(mask, 0.5)


def strong_augment(
    pixel_values: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
    num_ops: int = 2,
    max_cutout: float = 0.5,
) -> torch.Tensor:
    """The strong view of a batch of normalised images (B x C x H x W): undo the normalisation (`mean`, `std`),
    apply to each image `num_ops` operations drawn from [`RANDAUGMENT_OPS`] with random magnitudes, then a Cutout
    of side `U(0, max_cutout)` of the image, and normalise again. Draws come from `generator` (on the CPU); the
    images that drew the same operation are transformed together."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=pixel_values.device).view(shape)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=pixel_values.device).view(shape)
    images = (pixel_values.float() * std_t + mean_t).clamp(0.0, 1.0)
    n = images.shape[0]
    for _ in range(num_ops):
        ops = torch.randint(0, len(RANDAUGMENT_OPS), (n,), generator=generator)
        magnitude = torch.rand(n, generator=generator).to(images.device)
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0).to(images.device)
        images = images.clone()
        for k, op in enumerate(RANDAUGMENT_OPS):
            chosen = (ops == k).nonzero().flatten().to(images.device)
            if len(chosen):
                images[chosen] = apply_op(images[chosen], op, magnitude[chosen], sign[chosen])
    images = cutout(images, max_cutout * torch.rand(n, generator=generator), generator)
    return ((images - mean_t) / std_t).to(pixel_values.dtype)
