"""The README's "Use it in your own script" block, run as written (offline): the model it saves comes with the
processor of its evaluation transform, so that `pipeline()` on the export gives the evaluation's probabilities; and
`SmileTrainer` finds that processor itself when `processing_class` is not given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoImageProcessor, pipeline

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.data import (
    ImageTransform,
    TransformConfig,
    decode_image,
    eval_image_processor,
    evaluation_processor,
    prepare_datasets,
    set_transforms,
)

from .testing_utils import training_device_args

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MARKER = "<!-- own-script:"
CHECKPOINT = str(REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny")


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    after = text[text.index(MARKER) :]
    return re.search(r"```python\n(.*?)```", after, flags=re.S).group(1)


@pytest.mark.auto_device("the README's block as written: the Trainer picks the device")
def test_readme_own_script_block_exports_the_evaluation_processor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").symlink_to(REPO_ROOT / "checkpoints")  # the block names the bundled toy by path
    monkeypatch.setenv("TRANSFORMERS_NO_TQDM", "1")
    namespace: dict = {}
    exec(compile(readme_block(), str(README), "exec"), namespace)
    trainer, data = namespace["trainer"], namespace["data"]
    config = data.transform_config
    # the checkpoint's own processor (32 x 32, no crop) is not what evaluation does: resize to 37, crop 32
    assert config.resize_size == (37, 37) and config.crop_size == (32, 32)

    export = tmp_path / "digits-smile"
    saved = AutoImageProcessor.from_pretrained(export)
    raw = data.eval.with_format(None)
    images = [decode_image(raw[i]["image"]) for i in range(20)]
    expected = torch.stack([ImageTransform(config, train=False)(image) for image in images])
    got = saved([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # float32 rounding of (x / 255 - mean) / std

    logits = trainer.predict(data.eval.select(range(20))).predictions
    probabilities = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1)
    classifier = pipeline("image-classification", model=str(export), device=trainer.args.device)
    names = classifier.model.config.id2label
    for image, row in zip(images, probabilities):
        scores = {p["label"]: p["score"] for p in classifier(image, top_k=len(names))}
        assert scores == pytest.approx({names[i]: float(row[i]) for i in range(len(names))}, abs=1e-5)


def test_smile_trainer_finds_the_evaluation_processor_when_none_is_given(tmp_path):
    data = prepare_datasets(dataset="digits", train_samples_per_class=2, max_eval_samples=10, disable_tqdm=True)
    config = TransformConfig.from_image_processor(AutoImageProcessor.from_pretrained(CHECKPOINT))
    args = SmileTrainingArguments(output_dir=str(tmp_path), method="finetune", report_to="none", **training_device_args())
    assert evaluation_processor(data.eval) is None  # no transform attached yet
    trainer = SmileTrainer(model=CHECKPOINT, args=args, train_dataset=data.train, eval_dataset=data.eval)
    assert trainer.processing_class.size == {"height": 32, "width": 32}  # nothing known: the checkpoint's
    assert not getattr(trainer.processing_class, "do_center_crop", False)

    set_transforms(data, config)
    assert evaluation_processor(data.train) is None  # a training transform is no evaluation processor
    trainer = SmileTrainer(model=CHECKPOINT, args=args, train_dataset=data.train, eval_dataset=data.eval)
    assert trainer.processing_class.to_dict() == eval_image_processor(config).to_dict()
    assert trainer.processing_class.size == {"height": 37, "width": 37}
    assert trainer.processing_class.crop_size == {"height": 32, "width": 32}
    own = eval_image_processor(TransformConfig(crop_size=(8, 8), resize_size=(9, 9)))
    trainer = SmileTrainer(model=CHECKPOINT, args=args, train_dataset=data.train, eval_dataset=data.eval,
                           processing_class=own)  # fmt: skip
    assert trainer.processing_class is own  # one given is kept
