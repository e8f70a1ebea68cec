"""The exported image processor reproduces the evaluation transform: `pipeline("image-classification")` on the
export gives the run's own evaluation predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
from transformers.models.auto import image_processing_auto

from smile_hf import run as run_smile
from smile_hf.data import ImageTransform, TransformConfig, decode_image, eval_image_processor

from .testing_utils import TINY_CONFIGS, script_device_args


@pytest.mark.cpu_only("image processing: the transform and the processor run on the CPU, before any model")
def test_eval_processor_matches_the_eval_transform_bit_for_bit(tmp_path):
    config = TransformConfig(crop_size=(24, 20), resize_size=(29, 25), mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 31), (17, 50)]]
    images.append(images[0].convert("L"))  # grayscale goes through RGB as in training
    eval_image_processor(config).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)  # what a user of the export loads
    expected = torch.stack([ImageTransform(config, train=False)(image) for image in images])
    got = processor([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # float32 rounding of (x / 255 - mean) / std


@pytest.mark.cpu_only("image processing: the processor is loaded and run on the CPU, before any model")
@pytest.mark.parametrize("keep_aspect", [False, True])
@pytest.mark.parametrize("torchvision_installed", [True, False])
def test_the_export_loads_as_the_pil_processor_with_or_without_torchvision(
    tmp_path, monkeypatch, torchvision_installed, keep_aspect
):  # fmt: skip
    """`AutoImageProcessor` (and `pipeline()`, which calls it) picks the torchvision or the PIL class of a saved
    `image_processor_type` from `is_torchvision_available()`; torchvision's uint8 resize differs from PIL's (the
    evaluation's) by one level on some pixels. Simulated here by patching that check, torchvision itself unimported:
    the export must resolve to the class it was saved as, asking for no torchvision-backed class first."""
    config = TransformConfig(crop_size=(24, 20), resize_size=(29, 25), mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7),
                             keep_aspect=keep_aspect)  # fmt: skip
    saved = eval_image_processor(config)
    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"](3)).save_pretrained(tmp_path)
    saved.save_pretrained(tmp_path)
    monkeypatch.setattr(image_processing_auto, "is_torchvision_available", lambda: torchvision_installed)
    requested = []  # the class names transformers resolves, in order
    resolve = image_processing_auto.get_image_processor_class_from_name
    monkeypatch.setattr(image_processing_auto, "get_image_processor_class_from_name",
                        lambda name: requested.append(name) or resolve(name))  # fmt: skip
    torchvision_classes = {m["torchvision"] for m in image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES.values()
                           if m.get("torchvision")}  # fmt: skip

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    from_pipeline = pipeline("image-classification", model=str(tmp_path), device="cpu").image_processor
    for processor in (loaded, from_pipeline):
        assert type(processor) is type(saved) and processor.backend == "pil", (
            f"the export loads as {type(processor).__name__} ({processor.backend}), saved as {type(saved).__name__}"
        )
    assert requested and not torchvision_classes & set(requested), f"transformers asked for {requested}"
    if torchvision_installed:  # the saved type is the first and only class asked for
        assert set(requested) == {type(saved).__name__}, f"transformers asked for {requested}"

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 31), (17, 50)]]
    expected = torch.stack([ImageTransform(config, train=False)(image) for image in images])
    got = loaded(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # float32 rounding of (x / 255 - mean) / std


def test_pipeline_on_the_export_gives_the_evaluation_predictions(tmp_path, torch_device):
    output_dir = tmp_path / "run"
    result, trainer = run_smile.run(*run_smile.parse_args([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "60", "--method", "finetune",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--save_strategy", "no", "--report_to", "none",
        "--disable_tqdm", "True", "--output_dir", str(output_dir), *script_device_args(),
    ]))  # fmt: skip
    trainer.save_model()
    logits = trainer.predict(trainer.eval_dataset).predictions
    raw = trainer.eval_dataset.with_format(None)  # the stored images, without the transform
    images = [decode_image(raw[i]["image"]) for i in range(len(raw))]
    classifier = pipeline("image-classification", model=str(output_dir), device=torch_device)
    probabilities = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1)
    names = classifier.model.config.id2label
    for image, expected in zip(images, probabilities):
        scores = {p["label"]: p["score"] for p in classifier(image, top_k=len(names))}
        assert scores == pytest.approx({names[i]: float(expected[i]) for i in range(len(names))}, abs=1e-5)
