"""SmileTrainer end to end: real training on scikit-learn's digits, gradient accumulation, schedule, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T

from smile_hf import BackboneAdapter, SmileTrainer, SmileTrainingArguments, UnsupportedBackboneError
from smile_hf.backbones import SOURCE_HEAD_NAME

from .testing_utils import (
    FAMILIES,
    IMAGE_SIZE,
    random_image_dataset,
    source_and_student,
    tiny_model,
    training_device_args,
)


def digits_dataset(size: int = 16):
    """scikit-learn's 8x8 digits as 3 x size x size images (nearest upsampling), split 1000 / rest."""
    from datasets import Dataset
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    images = F.interpolate(images[:, None], size=(size, size), mode="nearest").repeat(1, 3, 1, 1)
    images = (images - 0.5) / 0.5
    labels = torch.tensor(digits.target)

    def make(sl):
        return Dataset.from_dict({"pixel_values": images[sl].numpy(), "labels": labels[sl].numpy()}).with_format("torch")

    return make(slice(0, 1000)), make(slice(1000, None))


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


@pytest.mark.parametrize("method", ["finetune", "mixup", "smile"])
def test_end_to_end_on_digits(method, tmp_path):
    train, test = digits_dataset()
    source = tiny_model("resnet", 10, seed=0)
    student = tiny_model("resnet", 10, seed=1)
    student.base_model.load_state_dict(source.base_model.state_dict())
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method=method,
        max_steps=50, per_device_train_batch_size=32, learning_rate=1e-2, lr_scheduler_type="constant",
        logging_steps=10, ema_update_every=5,
        per_device_eval_batch_size=256, seed=0,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=train, eval_dataset=test,
        compute_metrics=accuracy,
    )  # fmt: skip
    trainer.train()
    metrics = trainer.evaluate()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(np.isfinite(h["loss"]) for h in logs)
    assert metrics["eval_accuracy"] > 0.3  # chance is 0.1
    expected_terms = {"loss_main", "loss_aux", "loss_reg", "loss_cls"} if method == "smile" else {"loss_main"}
    assert expected_terms <= set(logs[0])
    assert ("mix_lambda" in logs[0]) == (method != "finetune")


def test_gradient_accumulation_matches_a_double_batch(tmp_path):
    """2 micro-batches of 4 accumulated give the same update as one batch of 8 (ViT: no BatchNorm)."""

    def one_step(batch_size, accumulation, out):
        _, student = source_and_student("vit")
        args = SmileTrainingArguments(
            output_dir=str(tmp_path / out), report_to="none", **training_device_args(), save_strategy="no", method="finetune",
            max_steps=1, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
            optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
            dataloader_drop_last=True,
        )  # fmt: skip
        dataset = random_image_dataset(8)
        trainer = SmileTrainer(model=student, args=args, train_dataset=dataset)
        trainer._get_train_sampler = lambda *a: torch.utils.data.SequentialSampler(dataset)
        trainer.train()
        return student.state_dict()

    double, accumulated = one_step(8, 1, "a"), one_step(4, 2, "b")
    _, start = source_and_student("vit")
    changed = 0
    for k in double:
        torch.testing.assert_close(accumulated[k], double[k], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(double[k], start.state_dict()[k])
    assert changed > 0


def test_lr_step_schedule(tmp_path):
    _, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method="finetune",
        reference_recipe=True, lr_step_fraction=0.5, max_steps=10, per_device_train_batch_size=4, logging_steps=1,
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, train_dataset=random_image_dataset(16))
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs == pytest.approx([0.01] * 5 + [0.001] * 5)
    assert isinstance(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer,
                      torch.optim.SGD)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_reads_features_in_one_pass(family, torch_device):
    model = tiny_model(family, 3).eval()
    adapter = BackboneAdapter(model)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    out = adapter.forward(model, x)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(pixel_values=x).logits)
        torch.testing.assert_close(adapter.head(model)(out.pooled), out.logits)  # the pooled feature feeds the head
    assert out.feature_map.dim() == 4 and out.feature_map.shape[0] == 2
    assert out.feature_map.shape[-1] * out.feature_map.shape[-2] >= 4
    assert out.feature_map.shape[1] in (out.pooled.shape[1], model.config.hidden_size if family in ("vit", "deit") else -1)


def test_vit_feature_map_excludes_class_token(torch_device):
    model = tiny_model("deit", 3).eval()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    out = BackboneAdapter(model).forward(model, x)
    tokens = model.base_model(x).last_hidden_state  # CLS, distillation, then 16 patches
    assert tokens.shape[1] == 2 + out.feature_map.shape[-1] * out.feature_map.shape[-2]
    torch.testing.assert_close(out.feature_map[:, :, 0, 0], tokens[:, 2])
    torch.testing.assert_close(out.feature_map[:, :, -1, -1], tokens[:, -1])


def test_unsupported_backbone_error_names_type_and_fix(torch_device):
    config = T.BeitConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=0,  # no head: nothing to derive it from
    )
    model = T.BeitForImageClassification(config).to(torch_device)
    with pytest.raises(UnsupportedBackboneError, match=r"'beit'.*register_backbone"):
        SmileTrainer(model=model, args=SmileTrainingArguments(output_dir="unused", report_to="none"))


def test_missing_teacher_is_a_clear_error():
    _, student = source_and_student("resnet")
    with pytest.raises(ValueError, match="teacher_model="):
        SmileTrainer(model=student, args=SmileTrainingArguments(output_dir="unused", report_to="none"))


def test_teacher_of_another_architecture_is_rejected():
    _, student = source_and_student("resnet")
    with pytest.raises(ValueError, match="'convnext'.*'resnet'"):
        SmileTrainer(
            model=student,
            args=SmileTrainingArguments(output_dir="unused", report_to="none"),
            teacher_model=tiny_model("convnext", 7),
        )


def test_source_head_starts_as_the_source_head_and_is_not_exported(tmp_path):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args())
    trainer = SmileTrainer(model=student, args=args, teacher_model=source)
    aux = getattr(trainer.model, SOURCE_HEAD_NAME)
    assert torch.equal(aux.weight, source.classifier[1].weight) and aux.weight is not source.classifier[1].weight
    trainer.save_model(str(tmp_path / "export"))
    reloaded = T.AutoModelForImageClassification.from_pretrained(str(tmp_path / "export"))
    assert not hasattr(reloaded, SOURCE_HEAD_NAME)
    assert set(reloaded.state_dict()) == {k for k in student.state_dict() if not k.startswith(SOURCE_HEAD_NAME)}


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_maps_are_one_per_stage_and_end_with_the_last_stage(family, torch_device):
    model = tiny_model(family, 3).eval()
    adapter = BackboneAdapter(model)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    outputs = {}
    last_stage = adapter.stages(model)[-1]
    last_stage.register_forward_hook(lambda m, a, o: outputs.__setitem__("last", o[0] if isinstance(o, tuple) else o))
    out = adapter.forward(model, x, output_hidden_states=True)
    assert len(out.hidden_maps) == len(adapter.stages(model))
    assert all(h.dim() == 4 for h in out.hidden_maps)
    if family not in ("swin", "vit", "deit"):  # CNN stages output maps directly
        torch.testing.assert_close(out.hidden_maps[-1], outputs["last"])
