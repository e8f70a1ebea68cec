"""Reduced-scale JPEG decoding (PIL `draft`) in the training transform only: where it applies, how far it moves
the pixels, that evaluation stays bit for bit the exported processor's; and a smoke run of
`benchmarks/data_speed.py` (no timing assertions)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from smile_hf.data import BatchTransform, ImageTransform, TransformConfig, decode_image, eval_image_processor

CONFIG = TransformConfig(crop_size=(56, 56), resize_size=(64, 64))

pytestmark = pytest.mark.cpu_only("image decoding and transforms run on the CPU, whatever the training device")


def encoded(width: int, height: int, format: str = "JPEG") -> bytes:
    """A smooth random image (upsampled noise), encoded."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(buffer, format=format, quality=95)
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_still_at_least_the_resize_size():
    data = encoded(1200, 800)
    # scales 1/8, 1/4, 1/2: min(1200 // 64, 800 // 64) = 12 -> 1/8 -> ceil(1200 / 8) x ceil(800 / 8)
    assert decode_image({"bytes": data}, draft_size=(64, 64)).size == (150, 100)
    assert decode_image({"bytes": data}, draft_size=(256, 256)).size == (600, 400)  # 800 // 256 = 3 -> 1/2
    assert decode_image({"bytes": data}, draft_size=(700, 700)).size == (1200, 800)  # not twice as large: full
    assert decode_image({"bytes": data}).size == (1200, 800)
    assert decode_image({"bytes": encoded(1200, 800, "PNG")}, draft_size=(64, 64)).size == (1200, 800)  # JPEG only


def test_training_decodes_at_reduced_scale_close_to_a_full_decode():
    data = encoded(1200, 800)
    batch = {"image": [{"bytes": data, "path": None}], "label": [0], "__example_index__": [0]}
    drafted = BatchTransform(ImageTransform(CONFIG, train=True), "image", "label", "train", seed=0)(batch)
    full = BatchTransform(ImageTransform(CONFIG, train=True, jpeg_draft=False), "image", "label", "train", seed=0)
    full = full(batch)
    a, b = drafted["pixel_values"][0], full["pixel_values"][0]
    assert a.shape == b.shape == (3, 56, 56) and not torch.equal(a, b)  # same crop and flip, other decode
    std = torch.tensor(CONFIG.std).view(3, 1, 1)
    # back in [0, 1] units: the reduced-scale decode moves pixels by well under 2% of the range on average
    assert ((a - b) * std).abs().mean() < 0.02


def test_evaluation_decodes_in_full_bit_for_bit_the_exported_processor():
    data = encoded(1200, 800)
    batch = {"image": [{"bytes": data, "path": None}], "label": [0]}
    got = BatchTransform(ImageTransform(CONFIG, train=False), "image", "label", "validation")(batch)["pixel_values"][0]
    image = Image.open(io.BytesIO(data)).convert("RGB")  # what pipeline() decodes
    expected = eval_image_processor(CONFIG)(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # float32 rounding of (x / 255 - mean) / std


def test_data_speed_benchmark_smoke(tmp_path):
    from benchmarks import data_speed

    out, md = tmp_path / "d.json", tmp_path / "d.md"
    data_speed.main(["--count", "2", "--rounds", "1", "--sizes", "96x64,800x600", "--output", str(out),
                     "--markdown", str(md)])  # fmt: skip
    payload = json.loads(out.read_text())
    assert set(payload["results"]) == {"96x64", "800x600"}
    expected = {data_speed.BASELINE, "PIL uint8 resize (eval transform)", "torch uint8 resize, full decode",
                "torch uint8 resize + JPEG draft (train default)"}  # fmt: skip
    for by_pipeline in payload["results"].values():
        assert expected <= set(by_pipeline) and all(v["median"] > 0 and v["n"] == 1 for v in by_pipeline.values())
    assert "torchvision v2" in md.read_text() and payload["torchvision"]
