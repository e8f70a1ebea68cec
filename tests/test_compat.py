"""What smile_hf needs from upstream beyond its public API (smile_hf/_compat.py), checked against the installed
versions: each test names the upstream member it relies on, so that an upstream change fails here, loudly, and not
inside a training run. Outputs are compared exactly (the same operations on the same weights)."""

from __future__ import annotations

import copy

import pytest
import safetensors
import torch
import transformers
from transformers import Trainer

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf._compat import (
    SCHEDULER_CREATED_FLAG,
    TRAINER_CALLS,
    TRAINER_OVERRIDES,
    TorchDispatchMode,
    accelerator_available,
    compiled_inner,
    hide_from_save,
    operator_name,
    portable_image_processor_class,
    shut_down_dataloader_workers,
    trainer_member_problems,
    trainer_run_dir,
)

from .testing_utils import IMAGE_SIZE, random_image_dataset, source_and_student, training_device_args


def test_private_trainer_members_are_there_with_the_expected_parameters():
    problems = trainer_member_problems()
    assert not problems, "transformers changed what SmileTrainer relies on: " + "; ".join(problems)
    for name in {**TRAINER_OVERRIDES, **TRAINER_CALLS}:  # and SmileTrainer's overrides do override them
        assert hasattr(Trainer, name), f"transformers.Trainer.{name} is gone"
    assert SmileTrainer._save_checkpoint is not Trainer._save_checkpoint
    assert SmileTrainer._load_from_checkpoint is not Trainer._load_from_checkpoint


def make_trainer(tmp_path, **kwargs):
    _, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method="finetune",
        per_device_train_batch_size=4, optim="sgd", learning_rate=0.1, save_strategy="no", disable_tqdm=True, **kwargs,
    )  # fmt: skip
    return SmileTrainer(model=student, args=args, train_dataset=random_image_dataset(8))


def test_run_dir_and_scheduler_flag_behave_as_the_trainer_expects(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, lr_scheduler_type="constant", lr_step_fraction=0.5, lr_step_gamma=0.1)
    assert trainer_run_dir(trainer) == trainer.args.output_dir
    trainer.train()
    first = trainer.lr_scheduler
    assert getattr(trainer, SCHEDULER_CREATED_FLAG, None) is True, f"Trainer.{SCHEDULER_CREATED_FLAG} is not set"
    # the flag makes the next train() build a schedule for its own length (step 2 of 4 is before the milestone)
    trainer.args.max_steps = 4
    trainer.train()
    assert trainer.lr_scheduler is not first, f"transformers no longer reads Trainer.{SCHEDULER_CREATED_FLAG}"
    assert trainer.lr_scheduler.lr_lambdas[0](1) == 1.0 and trainer.lr_scheduler.lr_lambdas[0](2) == pytest.approx(0.1)


def test_hidden_keys_are_left_out_of_save_pretrained(tmp_path):
    _, model = source_and_student("resnet")
    model.add_module("extra", torch.nn.Linear(2, 2))
    hide_from_save(model, {"extra.weight", "extra.bias"})
    model.save_pretrained(str(tmp_path))
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert keys and not {k for k in keys if k.startswith("extra.")}
    assert keys == set(model.state_dict()) - {"extra.weight", "extra.bias"}


def test_portable_image_processor_class():
    cls = portable_image_processor_class()
    assert cls is transformers.PilBackend and issubclass(cls, transformers.image_processing_utils.BaseImageProcessor)
    assert cls().backend == "pil"
    # the saved type must be no value of the backend mappings: those resolve to the torchvision class when it imports
    mappings = transformers.models.auto.image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES.values()
    assert cls.__name__ not in {name for mapping in mappings for name in mapping.values()}


@pytest.mark.cpu_only("DataLoader workers are CPU processes")
def test_dataloader_workers_of_a_trainer_are_stopped(tmp_path):
    """`Accelerator._dataloaders` holds what the Trainer's loaders became, `DataLoader._iterator` the persistent
    iterator and `_shutdown_workers` stops it: after the call no worker process is alive, and a second call finds
    none to stop."""
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), method="finetune", max_steps=2, per_device_train_batch_size=4, report_to=[],
        dataloader_num_workers=2, dataloader_persistent_workers=True, **training_device_args(),
    )  # fmt: skip
    _, student = source_and_student("resnet")
    trainer = SmileTrainer(model=student, args=args, train_dataset=random_image_dataset(16))
    trainer.train()
    workers = [w for loader in trainer.accelerator._dataloaders for w in loader._iterator._workers]
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    assert shut_down_dataloader_workers(trainer) == 1
    assert not any(w.is_alive() for w in workers)
    assert shut_down_dataloader_workers(trainer) == 0


def test_accelerator_available_matches_the_backends():
    expected = torch.cuda.is_available() or torch.backends.mps.is_available() or torch.xpu.is_available()
    assert accelerator_available() is expected


def test_dispatch_mode_sees_operator_names():
    class Names(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(operator_name(func))
            return func(*args, **(kwargs or {}))

    a, b = torch.ones(3), torch.full((3,), 2.0)
    with Names() as mode:
        c = torch.add(a, b).mul(b)
    assert mode.names == ["aten::add", "aten::mul"] and torch.equal(c, torch.full((3,), 6.0))


def test_compiled_inner_is_the_wrapped_module():
    module = torch.nn.Linear(2, 2)
    assert compiled_inner(torch.compile(module)) is module  # wrapping only: nothing is compiled before a call
    assert compiled_inner(module) is None


# ---- peft ------------------------------------------------------------------------------------------------------------

peft_mark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("peft") is None, reason="needs the optional `peft` package"
)


@peft_mark
def test_tuner_layers_are_the_lora_layers_only():
    import peft

    from smile_hf._compat import peft_tuner_layers

    _, base = source_and_student("vit")
    targets = sum(name.endswith(("q_proj", "v_proj")) for name, _ in base.named_modules())
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]))
    layers = list(peft_tuner_layers(model))
    assert targets > 0 and len(layers) == targets
    assert all(isinstance(layer, peft.tuners.lora.LoraLayer) for layer in layers)


@peft_mark
def test_switch_adapters_runs_the_named_adapter_or_the_base_and_restores_everything():
    import peft

    from smile_hf._compat import peft_tuner_layers, switch_adapters

    _, base = source_and_student("vit")
    base = base.eval()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)).to(base.device)
    with torch.no_grad():
        base_logits = copy.deepcopy(base)(pixel_values=x).logits
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
    model = peft.get_peft_model(base, config)
    generator = torch.Generator().manual_seed(1)

    def randomise(adapter):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if f".{adapter}." in n and "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=generator))

    randomise("default")
    with torch.no_grad():
        other_logits = model(pixel_values=x).logits  # what the second adapter will compute: a copy of this one
    model.add_adapter("other", copy.deepcopy(config))
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, p in params.items():
            if ".other." in n and "modules_to_save" not in n:
                p.copy_(params[n.replace(".other.", ".default.")])
    layers = list(peft_tuner_layers(model))
    for layer in layers:  # add_adapter leaves the new adapter active on the layers: back to the student's
        layer.set_adapter("default")
    randomise("default")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with torch.no_grad():
        default_logits = model(pixel_values=x).logits
        assert not torch.equal(default_logits, other_logits)
        with switch_adapters(layers, "other"):
            torch.testing.assert_close(model(pixel_values=x).logits, other_logits, rtol=0, atol=0)
        with switch_adapters(layers, None):
            torch.testing.assert_close(model(pixel_values=x).logits, base_logits, rtol=0, atol=0)
        torch.testing.assert_close(model(pixel_values=x).logits, default_logits, rtol=0, atol=0)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(layer.active_adapters == ["default"] and not layer.disable_adapters for layer in layers)
