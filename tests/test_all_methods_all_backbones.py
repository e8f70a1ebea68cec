"""Every method, mixing strategy and a few regulariser + mixing combinations train end to end, for two steps, on a
tiny model of every supported backbone family (64 x 64 images, batch 2), with finite losses and the method's own
loss terms logged. The formulas themselves are checked in test_methods.py and test_smile_loss.py."""

from __future__ import annotations

import pytest

from smile_hf import SmileTrainer, SmileTrainingArguments

from .testing_utils import FAMILIES, assert_logs_terms, random_image_dataset, source_and_student, training_device_args

# the methods trained (the loss terms each must log: `testing_utils.logged_terms`)
METHODS = ("l2sp", "delta", "bss", "rifle", "cotuning", "mixup", "cutmix", "manifold_mixup", "l2sp+mixup",
           "delta+manifold_mixup", "cotuning+cutmix", "smile+cutmix")  # fmt: skip

DATASET = random_image_dataset(4, num_labels=3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_method_trains_on_backbone(family, method, tmp_path):
    source, student = source_and_student(family, num_source=7, num_target=3)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method=method,
        max_steps=2, per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, final_finetune_fraction=0.0,
        delta_attention_batches=1, delta_attention_epochs=1, rifle_num_reinits=1,
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=DATASET)
    trainer.train()
    assert_logs_terms(trainer, method)
