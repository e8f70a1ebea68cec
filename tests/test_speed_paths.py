"""The shortcuts that keep a SMILE step cheap change nothing: cached EMA pairs, the teacher under the student's
autocast, the parameter count behind `total_flos` taken once. (No timing assertions.)"""

from __future__ import annotations

import copy

import torch
from transformers import Trainer

from smile_hf import EmaTeacher, SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import BackboneAdapter

from .testing_utils import random_image_dataset, source_and_student, training_device_args


def test_ema_pairs_follow_the_student_passed():
    source, student = source_and_student("resnet")
    other = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        for p in other.parameters():
            p.sub_(1.0)
    teacher = EmaTeacher(source, BackboneAdapter(student), decay=0.5, update_every=1)
    start = {k: v.clone() for k, v in source.base_model.named_parameters()}
    teacher.update(student)
    teacher.update(student)  # from the cached pairs
    teacher.update(other)  # another student: its own pairs, not the cached ones
    for name, value in source.base_model.named_parameters():
        s, o = student.base_model.get_parameter(name), other.base_model.get_parameter(name)
        expected = 0.5 * (0.25 * start[name] + 0.75 * s) + 0.5 * o
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    # in-place changes of the student (an optimizer step, load_state_dict) are seen through the cache
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    before = {k: v.clone() for k, v in source.base_model.named_parameters()}
    teacher.update(other)
    for name, value in source.base_model.named_parameters():
        torch.testing.assert_close(value, 0.5 * before[name], rtol=1e-5, atol=1e-6)


def test_teacher_forward_under_the_students_autocast(tmp_path):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), method="smile", max_steps=2, report_to="none", **training_device_args(), bf16=True,
        per_device_train_batch_size=4, save_strategy="no", final_finetune_fraction=0.0,
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
    seen = []
    terms = trainer.regularizer.loss_terms

    def spy(inputs):
        seen.append((inputs.student.feature_map.dtype, inputs.teacher.feature_map.dtype))
        return terms(inputs)

    trainer.regularizer.loss_terms = spy
    trainer.train()
    assert seen == [(torch.bfloat16, torch.bfloat16)] * 2
    assert all(p.dtype == torch.float32 for p in trainer.teacher.model.parameters())  # weights stay fp32


def test_floating_point_ops_as_the_stock_trainer(tmp_path, torch_device):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), method="finetune", report_to="none", **training_device_args()
    )
    trainer = SmileTrainer(model=student, args=args)
    inputs = {
        "pixel_values": torch.zeros(3, 3, 64, 64, device=torch_device),
        "labels": torch.zeros(3, dtype=torch.long, device=torch_device),
    }
    expected = Trainer.floating_point_ops(trainer, inputs)
    assert expected > 0
    assert trainer.floating_point_ops(inputs) == expected
    assert trainer.floating_point_ops(inputs) == expected  # cached
    assert trainer.floating_point_ops({"labels": inputs["labels"]}) == 0
