"""`label_smoothing_factor` and `compute_loss_func` under SmileTrainer: both act on the target term `L_main` of every
method, mixed or not, checked against `F.cross_entropy(..., label_smoothing=...)` and against the stock Trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers as T

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.mixing import Mix
from smile_hf.target import TargetLoss

from .testing_utils import random_image_dataset, source_and_student, training_device_args


def arguments(tmp_path, **kwargs) -> SmileTrainingArguments:
    base = dict(output_dir=str(tmp_path), report_to="none", save_strategy="no", **training_device_args())
    return SmileTrainingArguments(**{**base, **kwargs})


def batch(n=6, num_labels=3, device="cpu"):
    data = random_image_dataset(n, num_labels)[:]
    return {"pixel_values": data["pixel_values"].to(device), "labels": data["labels"].to(device)}


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("mixed", [False, True])
def test_target_loss_smooths_each_hard_target_like_f_cross_entropy(eps, mixed, torch_device):
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 5, generator=g).to(torch_device), torch.randint(0, 5, (8,), generator=g).to(torch_device)
    mix = Mix("mixup", 0.7, torch.randperm(8, generator=g).to(torch_device)) if mixed else None
    value = TargetLoss(label_smoothing=eps)(logits, labels, mix)
    expected = F.cross_entropy(logits, labels, label_smoothing=eps)
    if mixed:
        expected = 0.7 * expected + 0.3 * F.cross_entropy(logits, labels[mix.perm], label_smoothing=eps)
    torch.testing.assert_close(value, expected)  # float32 rounding of two formulas of the same sum


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_finetune_loss_with_label_smoothing_equals_the_stock_trainers(family, tmp_path, torch_device):
    _, student = source_and_student(family)
    inputs = batch(device=torch_device)
    stock = T.Trainer(
        model=student, args=T.TrainingArguments(output_dir=str(tmp_path / "stock"), report_to="none",
                                                label_smoothing_factor=0.3, **training_device_args()),
    )  # fmt: skip
    ours = SmileTrainer(model=student, args=arguments(tmp_path / "ours", method="finetune", label_smoothing_factor=0.3))
    student.train()
    expected = stock.compute_loss(student, dict(inputs))
    value = ours.compute_loss(student, dict(inputs))
    torch.testing.assert_close(value, expected)
    plain = F.cross_entropy(student(pixel_values=inputs["pixel_values"]).logits, inputs["labels"])
    assert not torch.allclose(value, plain)  # the smoothing did change the loss


@pytest.mark.parametrize("method", ["mixup", "smile", "l2sp+cutmix"])
def test_label_smoothing_changes_only_the_main_term_of_a_mixed_method(method, tmp_path, torch_device):
    source, student = source_and_student("resnet")
    inputs = batch(device=torch_device)
    terms = {}
    for eps in (0.0, 0.2):
        trainer = SmileTrainer(
            model=student, teacher_model=source,
            args=arguments(tmp_path / str(eps), method=method, label_smoothing_factor=eps, max_steps=10),
        )  # fmt: skip
        trainer.state.max_steps = 10
        trainer.regularizer.setup(trainer)  # L2-SP's starting point, as train() takes it
        student.train()
        mix = trainer.loss_fn.draw_mix(inputs["pixel_values"], student, step=0)
        output = trainer.loss_fn(student, inputs["pixel_values"], inputs["labels"], mix)
        terms[eps] = ({k: v.detach() for k, (_, v) in output.terms.items()}, output.student.logits.detach(), mix)
    (plain, logits, mix), (smoothed, _, _) = terms[0.0], terms[0.2]
    expected = mix.lam * F.cross_entropy(logits, inputs["labels"], label_smoothing=0.2) + (1 - mix.lam) * F.cross_entropy(
        logits, inputs["labels"][mix.perm], label_smoothing=0.2
    )
    torch.testing.assert_close(smoothed["main"], expected)
    assert not torch.allclose(smoothed["main"], plain["main"])
    for name in plain.keys() - {"main"}:  # SMILE's L_aux (soft targets), L_reg, L_cls; L2-SP's terms: unchanged
        torch.testing.assert_close(smoothed[name], plain[name])


def focal_like(outputs, labels, num_items_in_batch=None):
    """A loss unlike the cross-entropy: sum of (1 - p_y)^2 * -log p_y, divided by the number of items."""
    log_p = F.log_softmax(outputs.logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    return ((1 - log_p.exp()) ** 2 * -log_p).sum() / num_items_in_batch


def test_compute_loss_func_replaces_the_target_term_in_training_and_evaluation(tmp_path, torch_device):
    source, student = source_and_student("resnet")
    inputs = batch(device=torch_device)
    calls = []

    def loss_func(outputs, labels, num_items_in_batch=None):
        calls.append(labels.clone())
        return focal_like(outputs, labels, num_items_in_batch)

    trainer = SmileTrainer(
        model=student, teacher_model=source, args=arguments(tmp_path, method="smile", max_steps=10),
        compute_loss_func=loss_func,
    )  # fmt: skip
    trainer.state.max_steps = 10
    student.train()
    mix = trainer.loss_fn.draw_mix(inputs["pixel_values"], student, step=0)
    output = trainer.loss_fn(student, inputs["pixel_values"], inputs["labels"], mix)
    logits = output.student.logits
    outputs = T.modeling_outputs.ImageClassifierOutput(logits=logits)
    expected = mix.lam * focal_like(outputs, inputs["labels"], 6) + (1 - mix.lam) * focal_like(
        outputs, inputs["labels"][mix.perm], 6
    )
    torch.testing.assert_close(output.terms["main"][1], expected)
    assert [c.tolist() for c in calls] == [inputs["labels"].tolist(), inputs["labels"][mix.perm].tolist()]
    assert {"aux", "reg", "cls"} <= set(output.terms)  # SMILE's own terms are still there
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, dict(inputs))
        eval_outputs = student(pixel_values=inputs["pixel_values"])
    torch.testing.assert_close(loss, focal_like(eval_outputs, inputs["labels"], 6))
    assert trainer.compute_loss_func is loss_func  # the stock attribute, as in the Trainer
    assert trainer.loss_is_scaled_for_ga is False  # a per-batch mean: the Trainer divides it by the accumulation


def test_compute_loss_func_trains_under_gradient_accumulation_like_a_double_batch(tmp_path):
    """The function's value is a per-batch mean, so accumulation of 2 x 4 equals one batch of 8 (ViT: no BatchNorm)."""

    def one_step(batch_size, accumulation, out):
        _, student = source_and_student("vit")
        args = arguments(
            tmp_path / out, method="finetune", max_steps=1, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
            max_grad_norm=0.0, weight_decay=0.0, dataloader_drop_last=True,
        )  # fmt: skip
        dataset = random_image_dataset(8)
        trainer = SmileTrainer(model=student, args=args, train_dataset=dataset, compute_loss_func=focal_like)
        trainer._get_train_sampler = lambda *a: torch.utils.data.SequentialSampler(dataset)
        trainer.train()
        return student.state_dict()

    double, accumulated = one_step(8, 1, "a"), one_step(4, 2, "b")
    _, start = source_and_student("vit")
    assert any(not torch.equal(double[k], start.state_dict()[k]) for k in double)
    for k in double:  # float32 rounding of a sum in another order: ~1e-8 on these weights
        torch.testing.assert_close(accumulated[k], double[k], rtol=1e-5, atol=1e-6)


def test_compute_loss_func_with_label_smoothing_is_refused_in_one_line(tmp_path):
    _, student = source_and_student("resnet")
    with pytest.raises(ValueError, match="label_smoothing_factor=0 and smooth inside the function") as error:
        SmileTrainer(
            model=student, args=arguments(tmp_path, method="finetune", label_smoothing_factor=0.1),
            compute_loss_func=focal_like,
        )  # fmt: skip
    assert "\n" not in str(error.value)
