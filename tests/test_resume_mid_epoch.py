"""Exact resume in the middle of an epoch with augmentation on (random crop and flip), for every method: the
resumed run ends with the same weights and SMILE state as the uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoImageProcessor

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.data import TransformConfig, prepare_datasets, set_transforms

from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .testing_utils import training_device_args

CHECKPOINT = str(Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist-resnet-tiny")
STEPS, SAVE_EVERY, RESUME_AT = 7, 2, 4  # 40 images in batches of 16: 3 steps per epoch, step 4 is mid-epoch 2


def trainer(output_dir, method, augmentation_seed=0, **kwargs):
    data = prepare_datasets(dataset="digits", train_samples_per_class=4, max_eval_samples=10, seed=0)
    config = TransformConfig.from_image_processor(AutoImageProcessor.from_pretrained(CHECKPOINT))
    assert config.random_horizontal_flip and config.resize_size != config.crop_size  # augmentation is on
    set_transforms(data, config, augmentation_seed)
    args = SmileTrainingArguments(
        output_dir=str(output_dir), report_to="none", **training_device_args(), method=method, max_steps=STEPS,
        per_device_train_batch_size=16, save_strategy="steps", save_steps=SAVE_EVERY, disable_tqdm=True,
        delta_attention_batches=1, delta_attention_epochs=1, ema_update_every=2, final_finetune_fraction=0.3,
        model_init_kwargs={"num_labels": 10, "id2label": data.id2label}, **kwargs,
    )  # fmt: skip
    return SmileTrainer(model=CHECKPOINT, args=args, train_dataset=data.train)


def final_state(trainer):
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    state.update({f"smile.{k}": v for k, v in trainer.method_state_dict().items()})
    return state


def interrupted_and_resumed(tmp_path, method, **kwargs):
    uninterrupted = trainer(tmp_path / "a", method, **kwargs)
    uninterrupted.train()
    resumed = trainer(tmp_path / "b", method, **kwargs)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{RESUME_AT}"))
    assert resumed.state.global_step == STEPS
    return final_state(uninterrupted), final_state(resumed)


@pytest.mark.parametrize("method", ["finetune", "smile", "l2sp", "delta", "bss", "rifle", "cotuning", "smile+cutmix"])
def test_mid_epoch_resume_is_exact_with_augmentation(tmp_path, method):
    expected, got = interrupted_and_resumed(tmp_path, method)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key  # bit for bit: same data, same order, same draws


def test_the_check_can_fail_augmentation_from_the_global_generator(tmp_path):
    expected, got = interrupted_and_resumed(tmp_path, "finetune", augmentation_seed=None)
    assert any(not torch.equal(value, got[key]) for key, value in expected.items())
