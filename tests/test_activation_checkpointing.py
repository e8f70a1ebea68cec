"""Activation checkpointing (`activation_checkpointing=True`, formerly `gradient_checkpointing=True`).

The second code path is the same training without checkpointing: the same models, data, order and seed. A checkpointed
layer recomputes its forward pass in the backward pass with the random state it had (dropout is on here, p=0.1, so a
recomputation that drew other masks would show), the same operations on the same values, so every loss term, every
gradient (read before each optimizer step) and every trained weight must be equal bit for bit on the CPU
(`torch.equal`; float rounding would be the only admissible difference, and there is none). On an accelerator
(`SMILE_HF_TEST_DEVICE`), where kernels need not repeat their reduction order without full determinism: float32
rounding over 3 steps, rtol 1e-4, atol 1e-6. The feature hooks read a forward pass once: a module inside a
checkpointed layer runs twice (counted by a plain hook), and the capture sees it once.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import TrainerCallback

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import record_outputs, stop_recording
from smile_hf.backbones.capture import Capture, capturing

from .test_transfer_loss_standalone import RecordingLoss, loader
from .testing_utils import (
    TEST_DEVICE,
    clone,
    random_image_dataset,
    source_and_student,
    tiny_model,
    training_device_args,
)

STEPS, BATCH, SEED = 3, 4, 3
SMALL_DELTA = {"delta_attention_batches": 1, "delta_attention_epochs": 1}


def assert_same(got: torch.Tensor, expected: torch.Tensor, what) -> None:
    """Bit for bit on the CPU; float rounding on an accelerator (module docstring)."""
    if torch.device(TEST_DEVICE).type == "cpu":
        assert torch.equal(got, expected), what
    else:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6, msg=str(what))


def with_dropout(model: nn.Module, p: float = 0.1) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
    return model


class GradientRecorder(TrainerCallback):
    """The gradient of every parameter at every optimizer step, before the optimizer uses it."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})


def train(family, method, tmp_path, data, peft_config=None, **kwargs):
    """SmileTrainer.train() for STEPS steps: the trainer, the loss outputs of every step, the initial parameters."""
    source, student = source_and_student(family, num_source=5, num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method=method, seed=SEED,
        max_steps=STEPS, per_device_train_batch_size=BATCH, optim="sgd", learning_rate=0.05, save_strategy="no",
        disable_tqdm=True, **(SMALL_DELTA if method.startswith("delta") else {}), **kwargs,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=with_dropout(student), args=args, teacher_model=source, train_dataset=data, peft_config=peft_config
    )
    trainer.get_train_dataloader = lambda: loader(data)
    trainer.loss_fn = recorder = RecordingLoss(trainer.loss_fn)
    trainer.add_callback(gradients := GradientRecorder())
    trainer.gradients = gradients.steps
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    return trainer, recorder.outputs, initial


@pytest.mark.parametrize(
    "family, method, reentrant",
    [("vit", "smile", False), ("vit", "mixup", False), ("vit", "l2sp", False), ("vit", "delta", False),
     ("vit", "bss+cutmix", False), ("vit", "cotuning", False), ("swin", "smile", False), ("vit", "smile", True),
     ("vit", "smile+lora", False)],
)  # fmt: skip
def test_losses_gradients_and_weights_equal_those_without_checkpointing(family, method, reentrant, tmp_path):
    data = random_image_dataset(STEPS * BATCH, num_labels=3, seed=5)
    lora = {}
    if method.endswith("+lora"):
        peft = pytest.importorskip("peft", reason="LoRA needs peft (pip install smile_hf[lora])")
        method, lora = method.removesuffix("+lora"), {"peft_config": peft.LoraConfig(r=2, target_modules=["q_proj"])}
    plain, plain_outputs, initial = train(family, method, tmp_path / "plain", data, **lora)
    kwargs = {"activation_checkpointing_kwargs": {"use_reentrant": True}} if reentrant else {}
    checkpointed, outputs, _ = train(
        family, method, tmp_path / "ckpt", data, activation_checkpointing=True, **kwargs, **lora
    )

    assert checkpointed.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    assert len(outputs) == len(plain_outputs) == STEPS
    for step, (mine, theirs) in enumerate(zip(outputs, plain_outputs)):
        assert mine.terms.keys() == theirs.terms.keys()
        assert_same(mine.loss.detach(), theirs.loss.detach(), step)
        for term, (_, value) in mine.terms.items():
            assert_same(value.detach(), theirs.terms[term][1].detach(), (step, term))
    assert len(checkpointed.gradients) == len(plain.gradients) == STEPS
    for step, (mine, theirs) in enumerate(zip(checkpointed.gradients, plain.gradients)):
        assert mine.keys() == theirs.keys() and mine, step
        for name, gradient in theirs.items():
            assert_same(mine[name], gradient, (step, name))
    trained, reference = checkpointed.model.state_dict(), plain.model.state_dict()
    assert trained.keys() == reference.keys()
    for key, value in reference.items():
        assert_same(trained[key], value, key)
    assert any(not torch.equal(p, initial[name]) for name, p in plain.model.named_parameters())  # they did train


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_the_capture_reads_a_checkpointed_forward_pass_once(use_reentrant):
    """A module inside a checkpointed ViT layer runs twice per training step (its forward pass, then its
    recomputation in the backward pass); the capture's records and the sinks of record_outputs see one call."""
    model = with_dropout(tiny_model("vit", num_labels=3, device="cpu")).train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    inner = model.vit.layers[0].mlp
    calls, sink = [], []
    counter = inner.register_forward_hook(lambda *_: calls.append(1))
    record_outputs(inner, sink)
    try:
        capture = Capture(trunk=model.vit, heads=[model.classifier], record=[inner])
        with capturing(capture):
            logits = model(pixel_values=torch.randn(2, 3, 64, 64)).logits
        assert len(calls) == len(sink) == len(capture.records) == 1
        logits.sum().backward()
    finally:
        counter.remove()
        stop_recording(inner, sink)
    assert len(calls) == 2  # the recomputation ran the module again...
    assert len(sink) == len(capture.records) == 1  # ...and nothing read it
    assert capture.records[0][2] is sink[0] and capture.last is not None and capture.pooled is not None


def test_the_former_names_and_their_kwargs_are_honoured(tmp_path):
    data = random_image_dataset(BATCH, num_labels=3, seed=5)
    with pytest.warns(FutureWarning):
        trainer, _, _ = train(
            "vit", "l2sp", tmp_path, data, gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": True},
        )  # fmt: skip
    layer = trainer.model.vit.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords == {"use_reentrant": True}


def test_every_n_layers_is_honoured(tmp_path):
    data = random_image_dataset(BATCH, num_labels=3, seed=5)
    trainer, _, _ = train(
        "vit", "smile", tmp_path, data, activation_checkpointing=True,
        activation_checkpointing_kwargs={"every_n_layers": 2},
    )  # fmt: skip
    assert [layer.gradient_checkpointing for layer in trainer.model.vit.layers] == [True, False]


def test_offload_on_the_cpu_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="'offload': True}` on the CPU") as error:
        SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, activation_checkpointing=True,
                               activation_checkpointing_kwargs={"offload": True})  # fmt: skip
    assert "\n" not in str(error.value)


def test_manifold_mixup_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="manifold mixup") as error:
        SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", method="smile+manifold_mixup",
                               activation_checkpointing=True)  # fmt: skip
    assert "\n" not in str(error.value) and "activation_checkpointing=True" in str(error.value)


def test_reentrant_checkpointing_is_refused_with_inner_feature_maps(tmp_path):
    with pytest.raises(ValueError, match="use_reentrant.*method 'delta'") as error:
        SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", method="delta", activation_checkpointing=True,
                               activation_checkpointing_kwargs='{"use_reentrant": true}')  # fmt: skip
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("family", ["resnet", "convnext"])
def test_a_model_without_checkpointing_support_is_refused_in_one_line(family, tmp_path):
    assert not tiny_model(family, num_labels=3, device="cpu").supports_gradient_checkpointing  # transformers' flag
    source, student = source_and_student(family, num_target=3)
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", method="smile", activation_checkpointing=True,
                                  **training_device_args())  # fmt: skip
    with pytest.raises(ValueError, match="does not support activation checkpointing") as error:
        SmileTrainer(model=student, args=args, teacher_model=source)
    assert "\n" not in str(error.value) and type(student).__name__ in str(error.value)


def test_reentrant_checkpointing_is_refused_with_lora(tmp_path):
    peft = pytest.importorskip("peft", reason="LoRA needs peft (pip install smile_hf[lora])")
    source, student = source_and_student("vit", num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile", activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": True}, **training_device_args(),
    )  # fmt: skip
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    with pytest.raises(ValueError, match="use_reentrant.*LoRA") as error:
        SmileTrainer(model=clone(student), args=args, teacher_model=source, peft_config=config)
    assert "\n" not in str(error.value)


def test_a_trial_that_sets_manifold_mixup_is_refused(tmp_path):
    """A hyperparameter-search trial sets fields on built arguments: they are checked again for the new model."""
    source, student = source_and_student("vit", num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile", activation_checkpointing=True,
        **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model_init=lambda: clone(student), args=args, teacher_model=source)
    trainer.args.method = "smile+manifold_mixup"
    with pytest.raises(ValueError, match="activation_checkpointing=True` with manifold mixup"):
        trainer._hp_search_setup(None)
