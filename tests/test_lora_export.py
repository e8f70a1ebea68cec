"""The export of a LoRA student: `save_model` and `push_to_hub` write the student's adapter and head only (never the
EMA teacher's adapter), `save_merged` a plain checkpoint for `pipeline()`, while checkpoints keep the teacher.

Each export is loaded the way a user loads it (`PeftModel.from_pretrained` on the base; `pipeline`) and compared with
the trained student on the same pixels: logits at rtol / atol 1e-5 (the same float32 operations, the merged weights
rounded once), the same top-1 class.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
import transformers.trainer
from transformers import AutoModelForImageClassification, pipeline

from smile_hf.backbones import SOURCE_HEAD_NAME, unwrap_model
from smile_hf.method_state import METHOD_STATE_NAME

from .test_hub import FakeHub, no_network  # noqa: F401  (no_network: fixture)
from .testing_utils import IMAGE_SIZE, source_and_student

peft = pytest.importorskip("peft", reason="LoRA training needs the optional `peft` package (pip install smile_hf[peft])")

from smile_hf.lora import TEACHER_ADAPTER_NAME, save_merged  # noqa: E402  (after the skip)

from .test_lora import make_trainer  # noqa: E402


def all_files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, n), folder) for root, _, names in os.walk(folder) for n in names)


def uint8_images(n=3, seed=5) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), generator=g, dtype=torch.uint8).numpy() for _ in range(n)]


@pytest.fixture
def trained_vit(tmp_path):
    """A ViT LoRA student after 4 SMILE steps whose teacher adapter has moved away from the student's (2 EMA updates),
    and the folder of its pre-trained base with its processor (named by the model's config, as when loaded from
    there)."""
    trainer, _ = make_trainer(tmp_path / "run", "vit", max_steps=4, final_finetune_fraction=0.0)
    trainer.train()
    teacher = [p for n, p in unwrap_model(trainer.model).named_parameters() if f".{TEACHER_ADAPTER_NAME}." in n]
    student = [p for n, p in unwrap_model(trainer.model).named_parameters() if ".default." in n and "lora_" in n]
    assert int(trainer.teacher.num_updates) == 2 and any(not torch.equal(t, s) for t, s in zip(teacher, student))
    base_dir = tmp_path / "base"
    source_and_student("vit")[1].save_pretrained(str(base_dir))
    trainer.processing_class.save_pretrained(str(base_dir))
    unwrap_model(trainer.model).config.name_or_path = str(base_dir)
    trainer.model.eval()
    return trainer, base_dir


def student_logits(trainer, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return trainer.model.eval()(pixel_values=pixel_values.to(trainer.args.device)).logits.cpu()


def assert_pipeline_predicts_as_the_student(trainer, model_dir) -> None:
    """`pipeline("image-classification", model=model_dir)` gives the trained student's top-1 class and probability."""
    classifier = pipeline("image-classification", model=str(model_dir), device="cpu")
    images = uint8_images()
    pixel_values = trainer.processing_class(images, return_tensors="pt")["pixel_values"]  # the pipeline's processor
    probabilities = student_logits(trainer, pixel_values).softmax(-1)
    id2label = unwrap_model(trainer.model).config.id2label
    for image, expected in zip(images, probabilities):
        (top,) = classifier(image, top_k=1)
        assert top["label"] == id2label[int(expected.argmax())]
        assert top["score"] == pytest.approx(float(expected.max()), rel=1e-5, abs=1e-6)


def test_save_model_writes_the_student_adapter_alone(trained_vit, tmp_path):
    trainer, base_dir = trained_vit
    out = tmp_path / "export"
    trainer.save_model(str(out))
    files = all_files(out)
    assert not [f for f in files if TEACHER_ADAPTER_NAME in f], files
    assert {"adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json"} <= set(files)
    with safetensors.safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if TEACHER_ADAPTER_NAME in k or SOURCE_HEAD_NAME in k]

    # loaded as a user does, on the base it names: the trained student's logits and top-1
    loaded = peft.PeftModel.from_pretrained(AutoModelForImageClassification.from_pretrained(str(base_dir)), str(out))
    assert list(loaded.peft_config) == ["default"]
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    expected = student_logits(trainer, x)
    with torch.no_grad():
        actual = loaded.eval()(pixel_values=x).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(actual.argmax(-1), expected.argmax(-1))
    # transformers' PEFT integration loads the base the adapter names, then the adapter
    assert_pipeline_predicts_as_the_student(trainer, out)


def test_merged_export_runs_in_the_pipeline(trained_vit, tmp_path):
    trainer, _ = trained_vit
    out = tmp_path / "merged"
    save_merged(trainer, str(out))
    assert not [f for f in all_files(out) if TEACHER_ADAPTER_NAME in f or "adapter_" in f]
    assert_pipeline_predicts_as_the_student(trainer, out)


def test_push_to_hub_uploads_no_teacher_and_checkpoints_keep_it(tmp_path, monkeypatch, no_network):  # noqa: F811
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    trainer, _ = make_trainer(
        tmp_path / "run", "vit", max_steps=4, save_strategy="steps", save_steps=2, push_to_hub=True,
        hub_model_id="someone/smile-lora", hub_strategy="checkpoint", final_finetune_fraction=0.0,
    )  # fmt: skip
    trainer.train()
    trainer.push_to_hub()
    final = hub.uploads[-1]
    assert final["path_in_repo"] is None and "adapter_model.safetensors" in final["files"]
    assert not [f for f in final["files"] if TEACHER_ADAPTER_NAME in f or f.endswith(METHOD_STATE_NAME)]
    # a checkpoint holds the teacher (adapter, source head, EMA counter) for an exact resume, in the SMILE state
    checkpoint = tmp_path / "run" / "checkpoint-4"
    state = safetensors.torch.load_file(str(checkpoint / METHOD_STATE_NAME))
    teacher_adapter = {k for k in state if k.startswith("teacher.adapter.")}
    expected = {f"teacher.adapter.{n}" for n, _ in unwrap_model(trainer.model).named_parameters()
                if f".{TEACHER_ADAPTER_NAME}." in n}  # fmt: skip
    assert teacher_adapter == expected and len(expected) > 0
    assert int(state["teacher.num_updates"]) == int(trainer.teacher.num_updates) == 2


def test_the_trainer_uses_either_teacher_through_the_teacher_protocol(tmp_path):
    import inspect
    import re

    import smile_hf.trainer
    from smile_hf import EmaTeacher, Teacher
    from smile_hf.lora import LoraEmaTeacher

    lora, _ = make_trainer(tmp_path / "lora", "vit")
    assert type(lora.teacher) is LoraEmaTeacher and isinstance(lora.teacher, Teacher)
    assert issubclass(EmaTeacher, Teacher) and not lora.teacher.training
    assert not re.search(r"isinstance\([^)]*Teacher", inspect.getsource(smile_hf.trainer))
    # the shared schedule: every `update_every` steps while the decay is below 1
    assert [lora.teacher.should_update(s) for s in range(1, 5)] == [s % 2 == 0 for s in range(1, 5)]
