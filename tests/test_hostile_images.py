"""Hostile image files (a real decompression bomb, truncated files, unreadable files): named in one line by the
scan before training and by the data loader, and dropped under `--corrupt_images skip` (all offline)."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from smile_hf.data import (
    MAX_IMAGE_PIXELS_ENV,
    DataError,
    ImageTransform,
    TransformConfig,
    decode_image,
    max_image_pixels,
    prepare_datasets,
    set_transforms,
)
from smile_hf.inference import classify_files

pytestmark = pytest.mark.cpu_only("decoding images runs on the CPU")

BOMB_SIDE = 30_000
"""A 30000 x 30000 image: 900 million pixels, over PIL's default refusal limit of 2 x 89,478,485."""


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit grayscale PNG of `side` x `side` black pixels: every row (a filter byte and side/8 zero bytes)
    deflated, about 110 KB for 30000 x 30000, which decodes to 900 MB (one byte per pixel in PIL)."""
    row = b"\0" * (1 + -(-side // 8))
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row * 1000) for _ in range(side // 1000)) + deflate.compress(row * (side % 1000))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat + deflate.flush()) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_png()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_png() -> bytes:
    """A real 32 x 32 PNG of noise (incompressible, so the pixel data is most of the file) cut in half."""
    data = png(Image.frombytes("L", (32, 32), os.urandom(32 * 32)))
    return data[: len(data) // 2]


def folders(tmp_path, hostile: bytes, name: str = "zz_hostile.png") -> tuple[str, str, str]:
    """Train and validation folders of 4 x 4 images (3 per class in train, 1 in validation), with `hostile` as the
    file `name` in the training class `a`; returns both folders and the hostile file's path."""
    for split, count in (("train", 3), ("val", 1)):
        for label in "ab":
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                (tmp_path / split / label / f"{i}.png").write_bytes(png(Image.new("L", (4, 4), 40 * i)))
    path = tmp_path / "train" / "a" / name
    path.write_bytes(hostile)
    return str(tmp_path / "train"), str(tmp_path / "val"), str(path)


def test_the_bomb_is_a_real_one(bomb):
    """The file is small, PIL's default limit refuses it, and without a limit it opens as 30000 x 30000."""
    assert len(bomb) < 150_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert Image.open(io.BytesIO(bomb)).size == (BOMB_SIDE, BOMB_SIDE)  # the header only: nothing decoded


def hostile_files() -> list:
    return [
        pytest.param("bomb", "DecompressionBombError", id="decompression bomb"),
        pytest.param(truncated_png(), "OSError", id="truncated"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "SyntaxError|OSError|UnidentifiedImageError", id="garbage"),
    ]


@pytest.mark.parametrize("hostile, error", hostile_files())
def test_the_scan_names_a_hostile_image_and_stops_the_run(tmp_path, bomb, hostile, error):
    train, val, path = folders(tmp_path, bomb if hostile == "bomb" else hostile)
    with pytest.raises(DataError) as raised:
        prepare_datasets(train_dir=train, validation_dir=val)  # --corrupt_images error, the default
    message = str(raised.value)
    assert f"1 image(s) of the train split cannot be decoded: ['{path}'] (the first: " in message
    assert "--corrupt_images skip" in message and "\n" not in message
    assert any(name + ":" in message for name in error.split("|"))
    assert (MAX_IMAGE_PIXELS_ENV in message) == (hostile == "bomb")  # how to raise the limit, for the bomb only


@pytest.mark.parametrize("hostile, error", hostile_files())
def test_a_hostile_image_is_skipped_on_request_and_named(tmp_path, caplog, bomb, hostile, error):
    train, val, path = folders(tmp_path, bomb if hostile == "bomb" else hostile)
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        data = prepare_datasets(train_dir=train, validation_dir=val, corrupt_images="skip")
    assert (len(data.train), len(data.eval)) == (6, 2)  # the 6 good training images, the hostile one dropped
    assert f"Skipping 1 undecodable image(s) of the train split: ['{path}']" in caplog.text
    set_transforms(data, TransformConfig(crop_size=(4, 4), resize_size=(4, 4)))
    assert all(data.train[i]["pixel_values"].shape == (3, 4, 4) for i in range(len(data.train)))


def test_a_bomb_written_after_the_scan_is_named_by_the_data_loader(tmp_path, bomb):
    train, val, _ = folders(tmp_path, png(Image.new("L", (4, 4))))
    data = prepare_datasets(train_dir=train, validation_dir=val)
    replaced = os.path.join(train, "b", "0.png")
    with open(replaced, "wb") as f:
        f.write(bomb)  # the file changes between the scan and training
    set_transforms(data, TransformConfig(crop_size=(4, 4), resize_size=(4, 4)))
    with pytest.raises(DataError, match=rf"Cannot decode the image {replaced} of the train split \("
                       rf"DecompressionBombError: .*{MAX_IMAGE_PIXELS_ENV}=<pixels>.*--corrupt_images skip"):  # fmt: skip
        [data.train[i] for i in range(len(data.train))]


class Classifier(torch.nn.Module):
    """Two classes from the mean pixel: enough to classify files."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)
        self.config = SimpleNamespace(id2label={0: "a", 1: "b"}, num_channels=3)

    def forward(self, pixel_values):
        return SimpleNamespace(logits=self.linear(pixel_values.mean(dim=(1, 2, 3))[:, None]))


def test_prediction_names_a_bomb_and_skips_it_on_request(tmp_path, bomb, caplog):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    good = tmp_path / "good.png"
    good.write_bytes(png(Image.new("L", (4, 4))))
    model, transform = Classifier(), ImageTransform(TransformConfig(crop_size=(4, 4), resize_size=(4, 4)), False)
    with pytest.raises(DataError, match=rf"Cannot decode the image {path} \(DecompressionBombError: "):
        classify_files(model, [str(good), str(path)], transform)
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        predictions = classify_files(model, [str(path), str(good)], transform, corrupt_images="skip")
    assert [p.file for p in predictions] == [str(good)]
    assert f"Skipping the undecodable image {path} (DecompressionBombError" in caplog.text


def test_the_environment_variable_sets_pils_limit(monkeypatch):
    """PIL refuses more than twice `Image.MAX_IMAGE_PIXELS` pixels: a 10 x 10 image (100 pixels) is refused under a
    limit of 49 (98 < 100) and decoded under 50 (100 is not above 100) or 0 (no limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    image = {"bytes": png(Image.new("L", (10, 10))), "path": None}
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "49")
    with pytest.raises(Image.DecompressionBombError):
        decode_image(image)
    for limit, expected in (("50", 50), ("0", None), ("1_000_000", 1_000_000)):
        monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, limit)
        assert max_image_pixels() == expected
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("warnings.warn", lambda *args, **kwargs: None)  # PIL warns above the limit itself
            assert decode_image(image).size == (10, 10)
        assert Image.MAX_IMAGE_PIXELS == expected


def test_a_malformed_limit_is_one_line_before_anything_loads(monkeypatch, tmp_path):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=rf"^{MAX_IMAGE_PIXELS_ENV} must be a whole number of pixels \(0: no limit\), "
                       "got 'lots'.$"):  # fmt: skip
        prepare_datasets(train_dir=str(tmp_path / "missing"))
