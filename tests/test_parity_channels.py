"""Models of any number of input channels: the backbone probe, SMILE, DELTA and manifold mixup on 1- and 4-channel
models, grayscale / colour conversion of images to the model's channels (noted once), and one clear error for a
mismatch that cannot be converted."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import transformers as T
from datasets import Dataset
from PIL import Image

import smile_hf.channels as channels
from smile_hf import BackboneAdapter, SmileTrainer, SmileTrainingArguments
from smile_hf.channels import channel_stats, model_num_channels
from smile_hf.data import BatchTransform, ImageTransform, TransformConfig

from .testing_utils import IMAGE_SIZE, VIT_SIZES, training_device_args


def config_for(family: str, num_channels: int, num_labels: int):
    if family == "resnet":
        return T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=num_labels,
                              num_channels=num_channels)  # fmt: skip
    return T.ViTConfig(num_labels=num_labels, num_channels=num_channels, **VIT_SIZES)


def source_and_student(family: str, num_channels: int):
    """A source model of 7 classes and a student of 3 with the same `num_channels`-channel backbone."""
    torch.manual_seed(0)
    source = T.AutoModelForImageClassification.from_config(config_for(family, num_channels, 7))
    torch.manual_seed(1)
    student = T.AutoModelForImageClassification.from_config(config_for(family, num_channels, 3))
    student.base_model.load_state_dict(source.base_model.state_dict())
    return source, student


def tensor_dataset(num_channels: int, num: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(num, num_channels, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    labels = torch.randint(0, 3, (num,), generator=g)
    return Dataset.from_dict({"pixel_values": pixel_values.numpy(), "labels": labels.numpy()}).with_format("torch")


@pytest.fixture
def fresh_notes(monkeypatch):
    """Each test sees the once-per-process notes afresh."""
    monkeypatch.setattr(channels, "_NOTED", set())


@pytest.mark.parametrize("num_channels", [1, 4])
@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_model_num_channels_and_the_probe_follow_the_config(family, num_channels):
    _, student = source_and_student(family, num_channels)
    assert model_num_channels(student) == num_channels
    adapter = BackboneAdapter(student)  # the probe ran a num_channels-channel image
    out = adapter.forward(student.eval(), torch.randn(2, num_channels, IMAGE_SIZE, IMAGE_SIZE))
    assert out.logits.shape == (2, 3)


def test_model_num_channels_reads_the_first_layer_without_a_config():
    """A timm model's config has no `num_channels`: the first convolution says."""
    timm_like = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    assert model_num_channels(timm_like) == 4


@pytest.mark.parametrize("num_channels", [1, 4])
@pytest.mark.parametrize("method, term", [("smile", "loss_reg"), ("delta", "loss_delta"), ("manifold_mixup", "loss_main")])
def test_methods_train_models_of_any_channel_count(method, term, num_channels, tmp_path):
    source, student = source_and_student("resnet", num_channels)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", method=method, max_steps=3,
        per_device_train_batch_size=4, learning_rate=0.05, optim="sgd", logging_steps=1, delta_attention_batches=2,
        delta_attention_epochs=1, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, teacher_model=source, args=args, train_dataset=tensor_dataset(num_channels))
    trainer.train()
    logs = [h for h in trainer.state.log_history if term in h]
    assert len(logs) == 3 and all(np.isfinite(h[term]) for h in logs)
    # The trainer moved the student to the training device; its start was copied on the CPU.
    assert any(not torch.equal(v.cpu(), start[k]) for k, v in student.state_dict().items())


def transform(num_channels: int = 3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)) -> ImageTransform:
    config = TransformConfig((8, 8), (8, 8), mean, std, random_horizontal_flip=False)
    return ImageTransform(config.with_channels(num_channels) if num_channels != 3 else config, train=False)


def images(mode: str, n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    return [Image.fromarray(rng.integers(0, 256, (8, 8, bands) if bands > 1 else (8, 8), dtype=np.uint8), mode)
            for _ in range(n)]  # fmt: skip


def test_grayscale_images_become_rgb_for_a_three_channel_model_noted_once(fresh_notes, caplog):
    gray = images("L")
    with caplog.at_level(logging.WARNING, logger="smile_hf.channels"):
        out = [transform()(image) for image in gray]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1 and len(caplog.records) == 1
    assert "converted to RGB" in caplog.records[0].message
    pixels = torch.from_numpy(np.array(gray[0], dtype=np.float32)) / 255
    for c, (m, s) in enumerate(zip((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))):  # the gray level in each channel
        torch.testing.assert_close(out[0][c], (pixels - m) / s)


def test_colour_images_become_grayscale_for_a_one_channel_model_noted_once(fresh_notes, caplog):
    rgb = images("RGB")
    with caplog.at_level(logging.WARNING, logger="smile_hf.channels"):
        out = [transform(1)(image) for image in rgb]
    assert len(caplog.records) == 1 and "grayscale" in caplog.records[0].message
    assert out[0].shape == (1, 8, 8)
    luma = torch.from_numpy(np.array(rgb[0].convert("L"), dtype=np.float32)) / 255  # PIL's ITU-R 601-2 luma
    torch.testing.assert_close(out[0][0], (luma - 0.4) / 0.25)  # the mean of the RGB statistics


def test_four_channel_images_for_a_four_channel_model_and_an_unconvertible_mismatch():
    assert transform(4, mean=0.5, std=0.25)(images("RGBA")[0]).shape == (4, 8, 8)
    with pytest.raises(ValueError, match="mode 'RGB' cannot be converted for a model with 4 input channels") as error:
        transform(4, mean=0.5, std=0.25)(images("RGB")[0])
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="has 3 values but the model takes 4 channels"):
        channel_stats((0.5, 0.4, 0.3), 4)


def test_smile_trainer_fits_a_transformed_dataset_to_a_one_channel_model(fresh_notes, tmp_path):
    source, student = source_and_student("resnet", 1)
    rgb = images("RGB", 8)
    data = Dataset.from_dict({"image": rgb, "label": [i % 3 for i in range(8)]})
    config = TransformConfig((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE))  # an RGB checkpoint's processor
    data.set_transform(BatchTransform(ImageTransform(config, train=True), "image", "label", "train"))
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", method="smile", max_steps=2,
        per_device_train_batch_size=4, logging_steps=1, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, teacher_model=source, args=args, train_dataset=data)
    assert data[0]["pixel_values"].shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    trainer.train()
    assert all(np.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_a_tensor_dataset_with_other_channels_is_one_clear_error(tmp_path):
    _, student = source_and_student("resnet", 1)
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", method="finetune", **training_device_args())
    with pytest.raises(ValueError, match="training set's pixel_values have 3 channels but the model takes 1") as error:
        SmileTrainer(model=student, args=args, train_dataset=tensor_dataset(3))
    assert "\n" not in str(error.value)
