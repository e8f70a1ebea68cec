"""Per-group learning rates (`backbone_lr_multiplier`, `layer_decay`): each parameter's lr against the formula of
`smile_hf.param_groups`, recomputed here from the parameter *names* of each family (the package works from the
adapter's stage modules), the Trainer's weight-decay exemptions, the scheduler, and a real training step."""

from __future__ import annotations

import re

import pytest
import torch
import transformers as T

from smile_hf import SmileTrainer, SmileTrainingArguments

from .testing_utils import random_image_dataset, source_and_student, training_device_args

LR, M, D = 0.1, 0.1, 0.5  # base lr, backbone multiplier, layer decay

# (name pattern, layer): the layer of a parameter of each tiny family, from its name. L is the number of stages.
LAYERS = {
    # tiny ResNet: depths [1, 1] -> 2 stages; the stem is layer 0
    "resnet": (2, [(r"^resnet\.embedder\.", 0), (r"^resnet\.encoder\.stages\.(\d+)\.", "stage")]),
    # tiny ViT: 2 encoder blocks; embeddings layer 0, the final layernorm L + 1
    "vit": (2, [(r"^vit\.embeddings\.", 0), (r"^vit\.layers\.(\d+)\.", "stage"), (r"^vit\.layernorm\.", 3)]),
}


def expected_scale(family: str, name: str) -> float:
    """lr scale of the parameter `name`, from the formula: 1 for the head, else M x D ** (L + 1 - layer)."""
    name = name.removeprefix("base_model.model.")  # a PeftModel's names
    if name.startswith(("classifier.", "smile_source_head.")):
        return 1.0
    num_stages, patterns = LAYERS[family]
    for pattern, layer in patterns:
        match = re.match(pattern, name)
        if match:
            layer = int(match.group(1)) + 1 if layer == "stage" else layer
            return M * D ** (num_stages + 1 - layer)
    raise AssertionError(f"no expected layer for {name}")


def make_trainer(tmp_path, family="resnet", method="finetune", peft_config=None, **kwargs):
    source, student = source_and_student(family)
    options = dict(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method=method, max_steps=4,
        per_device_train_batch_size=4, learning_rate=LR, weight_decay=0.01, save_strategy="no",
        backbone_lr_multiplier=M, layer_decay=D, disable_tqdm=True,
    )  # fmt: skip
    options.update(kwargs)
    return SmileTrainer(
        model=student, args=SmileTrainingArguments(**options), teacher_model=source,
        train_dataset=random_image_dataset(8), peft_config=peft_config,
    )  # fmt: skip


def lr_of(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("family,method", [("resnet", "finetune"), ("vit", "finetune"), ("resnet", "smile")])
def test_each_parameter_gets_its_layer_lr_and_the_trainer_weight_decay(tmp_path, family, method):
    trainer = make_trainer(tmp_path, family, method)
    optimizer = trainer.create_optimizer()
    groups = lr_of(optimizer)
    decay_names = set(trainer.get_decay_parameter_names(trainer.model))
    trained = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert len(groups) == len(trained)  # every trainable parameter, once
    if method == "smile":
        assert any(n.startswith("smile_source_head.") for n, _ in trained)  # the attached head keeps the lr
    for name, parameter in trained:
        lr, weight_decay = groups[id(parameter)]
        assert lr == pytest.approx(LR * expected_scale(family, name), rel=1e-12), name
        assert weight_decay == (0.01 if name in decay_names else 0.0), name


def test_lora_layers_get_their_stage_lr(tmp_path):
    peft = pytest.importorskip("peft", reason="LoRA needs the optional `peft` package")
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["convolution"])
    trainer = make_trainer(tmp_path, "resnet", "finetune", peft_config=config)
    groups = lr_of(trainer.create_optimizer())
    trained = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n, _ in trained) and any("modules_to_save" in n for n, _ in trained)
    for name, parameter in trained:
        plain = re.sub(r"\.(modules_to_save\.default|original_module)\.", ".", name)
        plain = re.sub(r"\.(base_layer)\.", ".", plain)
        assert groups[id(parameter)][0] == pytest.approx(LR * expected_scale("resnet", plain), rel=1e-12), name


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_the_scheduler_scales_every_group_alike(tmp_path, schedule):
    trainer = make_trainer(tmp_path, lr_scheduler_type=schedule, warmup_steps=2)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    reference = T.get_scheduler(schedule, torch.optim.SGD([torch.zeros(1)], lr=1.0), 2, 10)  # factor per step
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        reference.optimizer.step()
        reference.step()
        factor = reference.get_last_lr()[0]
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(LR * group["lr_scale"] * factor, rel=1e-12, abs=1e-15)


def test_a_zero_multiplier_trains_only_the_head(tmp_path):
    trainer = make_trainer(tmp_path, backbone_lr_multiplier=0.0, layer_decay=None, optim="sgd")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, parameter in trainer.model.named_parameters():
        changed = not torch.equal(before[name], parameter.detach())
        assert changed == name.startswith("classifier."), name


def test_defaults_keep_the_stock_optimizer(tmp_path):
    trainer = make_trainer(tmp_path, backbone_lr_multiplier=1.0, layer_decay=None)
    optimizer = trainer.create_optimizer()
    assert len(optimizer.param_groups) == 2 and "lr_scale" not in optimizer.param_groups[0]  # Trainer's own groups


def test_a_user_optimizer_is_refused_with_per_group_options(tmp_path):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method="finetune", max_steps=1,
        backbone_lr_multiplier=0.1,
    )  # fmt: skip
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="an optimizer was passed in `optimizers`"):
        SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8),
                     optimizers=(optimizer, None))  # fmt: skip
    trainer = SmileTrainer(  # the optimizer class and kwargs alone: the groups are built here, as documented
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8),
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}),
    )  # fmt: skip
    assert {group["lr_scale"] for group in trainer.create_optimizer().param_groups} == {1.0, 0.1}


@pytest.mark.parametrize(
    "options,message",
    [({"backbone_lr_multiplier": -0.1}, "`backbone_lr_multiplier` must be >= 0"), ({"layer_decay": 1.5}, "`layer_decay` must be in (0, 1]")],
)
def test_bad_values_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SmileTrainingArguments(output_dir=str(tmp_path), **options)
