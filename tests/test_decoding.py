"""One image decoding everywhere: for every PIL mode the package accepts, `pipeline("image-classification")` on the
exported model gives, for the saved image file, the probabilities of the package's own predictions
(`classify_files`, what `--do_predict` writes to predictions.csv) and of its evaluation (the validation split of
`prepare_datasets` through its transform and the model)."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from smile_hf.data import (
    ImageTransform,
    TransformConfig,
    collate,
    eval_image_processor,
    prepare_datasets,
    set_transforms,
)
from smile_hf.inference import classify_files, write_predictions

from .testing_utils import TINY_CONFIGS


def mode_images() -> dict[str, tuple[Image.Image, str, dict]]:
    """name -> (image, file format, save options): every mode, with content that a wrong decoding changes."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    glyph = np.zeros((40, 48, 4), dtype=np.uint8)  # a black glyph on fully transparent black
    glyph[10:30, 20:28, 3] = 255
    half = np.concatenate([rgb, rng.integers(0, 256, (40, 48, 1), dtype=np.uint8)], axis=-1)
    la = np.stack([rgb[..., 0], rng.integers(0, 256, (40, 48), dtype=np.uint8)], axis=-1)
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 3
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    wide = rng.integers(0, 65536, (40, 48), dtype=np.uint16)
    return {
        "RGBA transparent glyph": (Image.fromarray(glyph, mode="RGBA"), "PNG", {}),
        "RGBA half transparent": (Image.fromarray(half, mode="RGBA"), "PNG", {}),
        "RGBA opaque": (Image.fromarray(rgb).convert("RGBA"), "PNG", {}),
        "LA": (Image.fromarray(la, mode="LA"), "PNG", {}),
        "P with transparency": (palette, "PNG", {"transparency": 3}),
        "I;16": (Image.fromarray(wide), "PNG", {}),
        "I": (Image.fromarray(wide.astype(np.int32) * 3 - 20000), "TIFF", {}),
        "F": (Image.fromarray(rng.normal(100, 150, (40, 48)).astype(np.float32)), "TIFF", {}),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), "JPEG", {"quality": 95}),
        "1": (Image.fromarray(rgb[..., 0] > 127), "PNG", {}),
        "EXIF-rotated JPEG": (Image.fromarray(rgb), "JPEG", {"exif": exif, "quality": 95}),
    }


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny random classifier of 7 classes and its evaluation processor, saved as a run exports them, and a
    validation folder holding every mode's image (one file per class folder "a".."k")."""
    root = tmp_path_factory.mktemp("decoding")
    torch.manual_seed(0)
    names = [f"class {i}" for i in range(7)]
    model = AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"](7)).eval()
    model.config.id2label, model.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    with torch.no_grad():  # logits of several units: probabilities that a wrong pixel changes well beyond 1e-5
        model.classifier[-1].weight.mul_(10.0)
    config = TransformConfig(crop_size=(32, 32), resize_size=(37, 37), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    model.save_pretrained(root / "model")
    eval_image_processor(config).save_pretrained(root / "model")
    files = {}
    for i, (name, (image, fmt, options)) in enumerate(mode_images().items()):
        folder = root / "val" / chr(ord("a") + i)
        folder.mkdir(parents=True)
        files[name] = str(folder / f"image.{fmt.lower()}")
        image.save(files[name], fmt, **options)
    return root, model, config, files


def pipeline_probabilities(classifier, file: str) -> dict[str, float]:
    return {p["label"]: p["score"] for p in classifier(file, top_k=7)}


def test_the_saved_files_hold_the_modes_under_test(export):
    _, _, _, files = export
    modes = {name: Image.open(file).mode for name, file in files.items()}
    # Pillow 10.0 (the floor) opens a 16-bit grayscale PNG as 32-bit "I" (same values), newer ones as "I;16"
    sixteen_bit = modes.pop("I;16")
    assert sixteen_bit in ("I;16", "I") and Image.open(files["I;16"]).getextrema()[1] > 255
    assert modes == {
        "RGBA transparent glyph": "RGBA", "RGBA half transparent": "RGBA", "RGBA opaque": "RGBA", "LA": "LA",
        "P with transparency": "P", "I": "I", "F": "F", "CMYK": "CMYK", "1": "1", "EXIF-rotated JPEG": "RGB",
    }  # fmt: skip
    assert Image.open(files["EXIF-rotated JPEG"]).getexif()[0x0112] == 6


@pytest.mark.cpu_only("pipeline(), classify_files and the evaluation all run the tiny model on the CPU")
def test_pipeline_predictions_and_evaluation_agree_for_every_mode(export):
    root, model, config, files = export
    classifier = pipeline("image-classification", model=str(root / "model"), device="cpu")
    expected = {name: pipeline_probabilities(classifier, file) for name, file in files.items()}

    # --do_predict's path: the transform read back from the export, classify_files, predictions.csv
    exported = TransformConfig.for_evaluation(AutoImageProcessor.from_pretrained(root / "model"))
    assert exported == replace(config, random_horizontal_flip=False)
    found = classify_files(model, list(files.values()), ImageTransform(exported, False), 5)
    with open(write_predictions(found, str(root / "predictions.csv")), newline="", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    for name, file in files.items():
        top5 = sorted(expected[name].items(), key=lambda item: -item[1])[:5]
        labels = [rows[file][f"label_{i}"] for i in range(1, 6)]
        scores = [float(rows[file][f"score_{i}"]) for i in range(1, 6)]
        # float32 softmax of the same logits computed in another batch: 1e-5 absolute
        assert scores == pytest.approx([score for _, score in top5], abs=1e-5), name
        assert labels == [label for label, _ in top5], name

    # evaluation: the validation split of an image folder, through the eval transform and the model
    data = prepare_datasets(train_dir=str(root / "val"), validation_dir=str(root / "val"), disable_tqdm=True)
    paths = [value["path"] for value in data.eval.with_format(None)["image"]]
    set_transforms(data, config)
    with torch.no_grad():
        logits = model(pixel_values=collate([data.eval[i] for i in range(len(data.eval))])["pixel_values"]).logits
    probabilities = logits.double().softmax(-1)
    by_path = {file: name for name, file in files.items()}
    for path, row in zip(paths, probabilities):
        name = by_path[path]
        assert expected[name] == pytest.approx({f"class {i}": float(p) for i, p in enumerate(row)}, abs=1e-5), name
