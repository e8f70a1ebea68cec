"""The exported model: a plain checkpoint of the student that loads cleanly and predicts what the student predicts."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import io
import json
import logging
from contextlib import contextmanager

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from datasets import Array3D, ClassLabel, Dataset, Features
from PIL import Image
from transformers import AutoModelForImageClassification, ViTImageProcessor, pipeline

from smile_hf import SmileTrainer, SmileTrainingArguments, load_student
from smile_hf.backbones import SOURCE_HEAD_NAME

from .testing_utils import IMAGE_SIZE, source_and_student, training_device_args

CLASS_NAMES = ["cat", "dog", "cow"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and far faster on a shared, busy machine (no OpenMP oversubscription)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def labelled_dataset(num=16, names=CLASS_NAMES, seed=0):
    """Random images with a `ClassLabel` label column, as `datasets.load_dataset` gives for a labelled dataset."""
    g = torch.Generator().manual_seed(seed)
    features = Features({"pixel_values": Array3D((3, IMAGE_SIZE, IMAGE_SIZE), "float32"), "labels": ClassLabel(names=names)})
    data = {
        "pixel_values": torch.randn(num, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g).numpy(),
        "labels": torch.randint(0, len(names), (num,), generator=g).tolist(),
    }
    return Dataset.from_dict(data, features=features).with_format("torch")


def image_processor():
    return ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def train_student(output_dir, method="smile", steps=2):
    source, student = source_and_student("resnet")
    assert student.config.id2label[0] == "LABEL_0"  # placeholder names, as with `num_labels=` alone
    args = SmileTrainingArguments(
        output_dir=str(output_dir), report_to="none", **training_device_args(), method=method, max_steps=steps,
        per_device_train_batch_size=4, optim="sgd", learning_rate=0.1, save_strategy="no", disable_tqdm=True,
        ema_update_every=1, final_finetune_fraction=0.0,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=labelled_dataset(), processing_class=image_processor()
    )
    trainer.train()
    return trainer


@contextmanager
def transformers_log():
    """Everything transformers logs at WARNING and above (where its loading reports go)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logger = transformers.utils.logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def assert_no_key_warnings(text):
    for word in ("LOAD REPORT", "MISSING", "UNEXPECTED", "missing", "unexpected", "newly initialized"):
        assert word not in text, text


def images(num=3, seed=0):
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(50 + 7 * i, 70, 3) * 255).astype("uint8")) for i in range(num)]


def test_exported_model_loads_cleanly_and_predicts_like_the_student(tmp_path, torch_device):
    trainer = train_student(tmp_path / "run")
    student = trainer.model.eval()
    export = tmp_path / "export"
    trainer.save_model(str(export))

    files = set(os.listdir(export))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training_args.json"} <= files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl"))]  # weights in safetensors
    assert json.loads((export / "training_args.json").read_text())["method"] == "smile"
    weights = safetensors.torch.load_file(str(export / "model.safetensors"))
    expected_keys = {k for k in student.state_dict() if not k.startswith(SOURCE_HEAD_NAME + ".")}
    assert set(weights) == expected_keys and len(expected_keys) < len(student.state_dict())

    with transformers_log() as log:
        loaded = AutoModelForImageClassification.from_pretrained(str(export)).to(torch_device).eval()
        classifier = pipeline("image-classification", model=str(export), device=torch_device)
    assert_no_key_warnings(log.getvalue())
    assert type(loaded) is type(student)
    assert loaded.config.id2label == dict(enumerate(CLASS_NAMES))
    assert loaded.config.label2id == {name: i for i, name in enumerate(CLASS_NAMES)}

    pixel_values = torch.randn(5, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)).to(torch_device)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, student(pixel_values).logits)

    # the pipeline (processor saved beside the model) gives the softmax of the trained student's logits
    pictures = images()
    processed = image_processor()(pictures, return_tensors="pt")["pixel_values"].to(torch_device)
    with torch.no_grad():
        probs = student(processed).logits.softmax(-1)
    for picture, expected in zip(pictures, probs):
        scores = {p["label"]: p["score"] for p in classifier(picture, top_k=len(CLASS_NAMES))}
        assert scores == pytest.approx({name: expected[i].item() for i, name in enumerate(CLASS_NAMES)}, abs=1e-5)

    # a user's own `save_pretrained` of the student leaves the attached head out too
    student.save_pretrained(str(tmp_path / "by_hand"))
    with transformers_log() as log:
        AutoModelForImageClassification.from_pretrained(str(tmp_path / "by_hand"))
    assert_no_key_warnings(log.getvalue())

    # the check above can fail: the student saved with its attached source head is reported
    student._keys_to_ignore_on_save = set()
    student.save_pretrained(str(tmp_path / "with_head"))
    with transformers_log() as log:
        AutoModelForImageClassification.from_pretrained(str(tmp_path / "with_head"))
    assert "UNEXPECTED" in log.getvalue() and SOURCE_HEAD_NAME in log.getvalue()


def test_real_class_names_are_kept(tmp_path):
    source, student = source_and_student("resnet")
    student.config.id2label = {0: "a", 1: "b", 2: "c"}
    student.config.label2id = {"a": 0, "b": 1, "c": 2}
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(), method="finetune")
    trainer = SmileTrainer(model=student, args=args, train_dataset=labelled_dataset(4), processing_class=image_processor())
    trainer.save_model(str(tmp_path / "export"))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["id2label"] == {"0": "a", "1": "b", "2": "c"}


def test_remote_code_is_only_trusted_when_asked(tmp_path, monkeypatch):
    source, _ = source_and_student("resnet")
    source.save_pretrained(str(tmp_path / "pretrained"))
    calls = []
    real = AutoModelForImageClassification.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForImageClassification, "from_pretrained", classmethod(spy))
    student = load_student(str(tmp_path / "pretrained"), num_labels=3)
    args = SmileTrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", **training_device_args(), method="smile")
    SmileTrainer(model=student, args=args, train_dataset=labelled_dataset(4))  # loads the source model for the teacher
    assert calls == [False, False]
    load_student(str(tmp_path / "pretrained"), num_labels=3, trust_remote_code=True)
    assert calls[-1] is True
