"""The lr-step schedule against the stock warm-up, the reference recipe beside a schedule the user passes, and what
`SmileTrainingArguments` records and switches (`reference_recipe_applied`, `accelerator_config.non_blocking`)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.recipes import REFERENCE_LR_STEP_FRACTION

from .testing_utils import random_image_dataset, source_and_student, training_device_args


def make(**kwargs) -> SmileTrainingArguments:
    return SmileTrainingArguments(output_dir="unused", report_to="none", **kwargs)


@pytest.mark.parametrize("warmup, warmup_steps", [({"warmup_steps": 0}, 0), ({"warmup_steps": 1}, 1),
                                                  ({"warmup_steps": 3}, 3), ({"warmup_steps": 0.25}, 3),
                                                  ({"warmup_ratio": 0.25}, 3)])  # fmt: skip
def test_lr_step_warm_up_matches_the_stock_schedule_step_for_step(warmup, warmup_steps):
    """Every step's factor is `transformers.get_scheduler("constant_with_warmup")`'s, times gamma from the milestone
    (a warm-up below 1 is a fraction of the 10 steps: ceil(2.5) = 3)."""
    total, fraction, gamma = 10, 0.6, 0.1
    if "warmup_ratio" in warmup and "warmup_ratio" not in {f.name for f in dataclasses.fields(transformers.TrainingArguments)}:
        pytest.skip(f"transformers {transformers.__version__} has no warmup_ratio (warmup_steps < 1 is the ratio)")
    _, student = source_and_student("resnet")
    args = make(
        method="finetune", lr_scheduler_type="constant", lr_step_fraction=fraction, lr_step_gamma=gamma,
        learning_rate=1.0, **warmup, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args)
    ours = trainer.create_scheduler(total, torch.optim.SGD(student.parameters(), lr=1.0))
    stock = transformers.get_scheduler(
        "constant_with_warmup", torch.optim.SGD(student.parameters(), lr=1.0), num_warmup_steps=warmup_steps,
        num_training_steps=total,
    )  # fmt: skip
    milestone = int(fraction * total)
    for step in range(total):
        expected = stock.get_last_lr()[0] * (gamma if step >= milestone else 1.0)
        assert ours.get_last_lr()[0] == pytest.approx(expected), step
        ours.optimizer.step(), ours.step(), stock.optimizer.step(), stock.step()


def test_reference_recipe_leaves_a_passed_schedule_without_the_step_decay():
    args = make(reference_recipe=True, lr_scheduler_type="cosine")
    assert args.lr_scheduler_type == "cosine" and args.lr_step_fraction is None
    assert "lr_step_fraction" not in args.reference_recipe_applied
    assert (args.learning_rate, args.optim) == (0.01, "sgd")  # the rest of the recipe still applies
    recipe = make(reference_recipe=True)  # without a passed schedule, the recipe's step decay
    assert recipe.lr_step_fraction == pytest.approx(REFERENCE_LR_STEP_FRACTION)


def test_reference_recipe_trains_with_a_passed_cosine_schedule(tmp_path):
    _, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method="finetune",
        reference_recipe=True, lr_scheduler_type="cosine", max_steps=4, per_device_train_batch_size=4, logging_steps=1,
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, train_dataset=random_image_dataset(16))
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    stock = transformers.get_scheduler(
        "cosine", torch.optim.SGD(student.parameters(), lr=0.01), num_warmup_steps=0, num_training_steps=4
    )
    expected = []
    for _ in range(4):
        expected.append(stock.get_last_lr()[0])
        stock.optimizer.step(), stock.step()
    assert lrs == pytest.approx(expected)


def test_reference_recipe_applied_is_a_field_kept_by_replace_and_saved():
    args = make(reference_recipe=True, learning_rate=0.05)
    assert "reference_recipe_applied" in {f.name for f in dataclasses.fields(SmileTrainingArguments)}
    assert args.reference_recipe_applied["optim"] == "sgd" and "learning_rate" not in args.reference_recipe_applied
    copied = dataclasses.replace(args, seed=3)
    assert copied.reference_recipe_applied == args.reference_recipe_applied
    saved = json.loads(args.to_json_string())["reference_recipe_applied"]
    assert saved == json.loads(json.dumps(args.reference_recipe_applied))
    # a field the replace changes is no longer the recipe's
    changed = dataclasses.replace(args, weight_decay=0.5)
    assert "weight_decay" not in changed.reference_recipe_applied and "optim" in changed.reference_recipe_applied
    assert make().reference_recipe_applied == {}


@pytest.mark.parametrize(
    "accelerator_config, pin, expected",
    [(None, True, True), (None, False, False), ({"split_batches": True}, True, True), ({"non_blocking": False}, True, False)],
)
def test_non_blocking_follows_the_final_pin_memory_unless_the_user_set_it(
    accelerator_config, pin, expected, monkeypatch
):
    monkeypatch.setattr("smile_hf.config.accelerator_available", lambda: True)  # pinning takes effect (test_pinned_memory)
    args = make(accelerator_config=accelerator_config, dataloader_pin_memory=pin)
    assert args.accelerator_config.non_blocking is expected
    assert make(accelerator_config=accelerator_config, use_cpu=True).accelerator_config.non_blocking is False  # unpinned
    if accelerator_config and "split_batches" in accelerator_config:
        assert args.accelerator_config.split_batches is True  # the user's other keys kept
    assert dataclasses.replace(args).accelerator_config.non_blocking is expected
