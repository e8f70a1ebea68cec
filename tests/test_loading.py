"""SmileTrainer loads what it can: a checkpoint name as `model` (student with a new head, source model when the
method needs it, image processor), the default collator; methods declare whether they need the source model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from transformers import AutoModelForImageClassification

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME
from smile_hf.data import collate
from smile_hf.methods import REGULARIZERS

from .testing_utils import training_device_args

CHECKPOINT = str(Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist-resnet-tiny")
CLASS_NAMES = ["cat", "dog", "fox"]


def dataset(class_label: bool = True, num: int = 12) -> Dataset:
    g = torch.Generator().manual_seed(0)
    label = ClassLabel(names=CLASS_NAMES) if class_label else Value("int64")
    features = Features({"pixel_values": Sequence(Sequence(Sequence(Value("float32")))), "labels": label})
    data = {
        "pixel_values": torch.randn(num, 3, 32, 32, generator=g).numpy(),
        "labels": [i % len(CLASS_NAMES) for i in range(num)],
    }
    return Dataset.from_dict(data, features=features).with_format("torch")


def make(tmp_path, method="smile", train_dataset=None, **kwargs):
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method=method, max_steps=2,
        save_strategy="no", per_device_train_batch_size=4, **kwargs,
    )  # fmt: skip
    return SmileTrainer(model=CHECKPOINT, args=args, train_dataset=train_dataset if train_dataset is not None else dataset())


def test_needs_source_model_follows_the_declared_needs():
    needing = {name for name, cls in REGULARIZERS.items() if cls.needs_source_model}
    assert needing == {name for name, cls in REGULARIZERS.items() if cls.needs_teacher or cls.needs_source_head}
    assert needing == {"smile", "delta", "delta_tllib", "cotuning"}


def test_checkpoint_name_loads_student_source_model_and_processor(tmp_path, torch_device):
    trainer = make(tmp_path, "smile")
    student = trainer.model
    source = AutoModelForImageClassification.from_pretrained(CHECKPOINT).to(torch_device)
    assert student.config.id2label == dict(enumerate(CLASS_NAMES)) and student.classifier[1].out_features == 3
    # the backbone is the pre-trained one, the new head is not the source head
    for (name, p), q in zip(student.base_model.named_parameters(), source.base_model.parameters()):
        assert torch.equal(p, q), name
    # the teacher is the source model, source head included; the auxiliary head is a copy of the source head
    for p, q in zip(trainer.teacher.model.parameters(), source.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(getattr(student, SOURCE_HEAD_NAME).weight, source.classifier[1].weight)
    assert type(trainer.processing_class).__name__.startswith("ViTImageProcessor")  # the checkpoint's processor
    assert trainer.processing_class.size == {"height": 32, "width": 32}
    assert trainer.data_collator is collate
    trainer.train()  # the default collator stacks the dataset's examples
    assert trainer.state.global_step == 2


def test_method_without_source_model_loads_none(tmp_path):
    trainer = make(tmp_path, "finetune+mixup")
    assert trainer.teacher is None and not hasattr(trainer.model, SOURCE_HEAD_NAME)


def test_classes_from_model_init_kwargs_when_the_labels_are_plain_integers(tmp_path):
    with pytest.raises(ValueError, match="model_init_kwargs"):
        make(tmp_path, "finetune", train_dataset=dataset(class_label=False))
    trainer = make(
        tmp_path, "finetune", train_dataset=dataset(class_label=False),
        model_init_kwargs={"num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"}},
    )  # fmt: skip
    assert trainer.model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_loading_kwargs_reach_every_load(tmp_path, monkeypatch):
    """`cache_dir` (like `revision`, `token`, `trust_remote_code`) reaches the student, the source model and the image
    processor; the classes (`num_labels`, given to the student's `from_pretrained` as an `id2label` of that many
    labels) reach the student only."""
    import transformers

    calls = []

    def spy(cls_name, real):
        def from_pretrained(name, *args, **kwargs):
            calls.append((cls_name, kwargs))
            return real(name, *args, **kwargs)

        return from_pretrained

    for cls in (transformers.AutoModelForImageClassification, transformers.AutoImageProcessor):
        monkeypatch.setattr(cls, "from_pretrained", spy(cls.__name__, cls.from_pretrained))
    cache = str(tmp_path / "cache")
    make(tmp_path, "smile", model_init_kwargs={"cache_dir": cache, "num_labels": 3})
    loaded = [name for name, _ in calls]
    assert sorted(loaded) == ["AutoImageProcessor", "AutoModelForImageClassification", "AutoModelForImageClassification"]
    assert all(kwargs.get("cache_dir") == cache for _, kwargs in calls)
    assert [len(kwargs["id2label"]) for _, kwargs in calls if "id2label" in kwargs or "num_labels" in kwargs] == [3]
    assert all(kwargs.get("trust_remote_code", False) is False for _, kwargs in calls)
