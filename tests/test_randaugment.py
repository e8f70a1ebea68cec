"""FixMatch's strong augmentation (smile_hf.randaugment): operations against their definitions computed by hand on
small images, Cutout's square, and the whole view determined by its generator. Exact comparisons except where a
bilinear resampling is involved (1e-5 absolute: float32 interpolation at integer shifts)."""

from __future__ import annotations

import torch

from smile_hf.randaugment import RANDAUGMENT_OPS, apply_op, cutout, strong_augment


def test_pixel_operations_follow_their_definitions():
    image = torch.tensor([[[0.1, 0.6], [0.3, 0.9]]]).repeat(3, 1, 1)[None]  # 1 x 3 x 2 x 2
    one = torch.ones(1)
    # solarize at T = 0.5: values >= T inverted
    solarized = apply_op(image, "solarize", torch.tensor([0.5]), one)
    assert torch.equal(solarized[0, 0], torch.stack([image[0, 0, :, 0], 1 - image[0, 0, :, 1]], dim=1))
    # posterize with magnitude 0: 4 bits, floor(v * 255 / 16) * 16 / 255
    expected = torch.floor(image * 255 / 16) * 16 / 255
    assert torch.equal(apply_op(image, "posterize", torch.zeros(1), one), expected)
    # autocontrast: (v - min) / (max - min) per channel
    assert torch.allclose(apply_op(image, "autocontrast", one, one)[0, 0], (image[0, 0] - 0.1) / 0.8)
    # brightness with magnitude 1: factor 0.95 towards black
    assert torch.allclose(apply_op(image, "brightness", one, one), 0.95 * image)
    assert torch.equal(apply_op(image, "identity", one, one), image)


def test_translation_moves_the_image_by_the_drawn_fraction():
    image = torch.zeros(1, 1, 10, 10)
    image[0, 0, :, 4] = 1.0  # a vertical line at column 4
    # magnitude 1, sign -1: shift of 0.3 x 10 = 3 columns (the sampling grid moves by -0.6 of its span of 2)
    moved = apply_op(image, "translate_x", torch.ones(1), -torch.ones(1))
    assert torch.allclose(moved[0, 0, :, 7], torch.ones(10), atol=1e-5)
    assert torch.allclose(moved[0, 0, :, 4], torch.zeros(10), atol=1e-5)
    assert torch.allclose(moved[0, 0, :, :3], torch.full((10, 3), 0.5), atol=1e-5)  # grey comes in from outside


def test_cutout_is_a_grey_square_of_the_drawn_side():
    images = torch.zeros(3, 1, 8, 8)
    out = cutout(images, torch.tensor([0.5, 0.0, 0.25]), torch.Generator().manual_seed(0))
    grey = (out == 0.5).flatten(1).sum(1).tolist()
    assert grey[1] == 0 and 0 < grey[0] <= 16 and 0 < grey[2] <= 4  # side 4 and 2, clipped at the border


def test_strong_view_is_determined_by_its_generator_and_keeps_the_shape():
    x = torch.randn(6, 3, 12, 12)
    views = [strong_augment(x, [0.5] * 3, [0.25] * 3, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert views[0].shape == x.shape and torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    assert len(RANDAUGMENT_OPS) == 12
