"""The EMA teacher: exact EMA formula, update schedule, untouched heads, no gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import TrainerCallback

from smile_hf import EmaTeacher, FixedTeacher, SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME, BackboneAdapter

from .testing_utils import IMAGE_SIZE, random_image_dataset, source_and_student, training_device_args


class RecordStudentBackbone(TrainerCallback):
    """Snapshots the student's backbone after each optimizer step (what the EMA reads)."""

    def __init__(self):
        self.snapshots = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.snapshots[state.global_step] = {k: v.detach().clone() for k, v in model.base_model.named_parameters()}


def train_smile(tmp_path, family="resnet", **kwargs):
    source, student = source_and_student(family)
    source_before = copy.deepcopy(source)
    recorder = RecordStudentBackbone()
    defaults = dict(max_steps=6, ema_update_every=2, ema_decay=0.9, final_finetune_fraction=0.0, learning_rate=1e-2)
    defaults.update(kwargs)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method="smile",
        per_device_train_batch_size=4, logging_steps=1, **defaults,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(24), callbacks=[recorder]
    )
    trainer.train()
    return trainer, source_before, recorder


def test_teacher_moves_exactly_by_ema_every_k_steps(tmp_path):
    trainer, source_before, recorder = train_smile(tmp_path)
    expected = dict(source_before.base_model.named_parameters())
    expected = {k: v.detach().clone() for k, v in expected.items()}
    for step in range(1, 7):
        if step % 2 == 0:  # updates after steps 2, 4, 6 only
            for k in expected:
                expected[k] = 0.9 * expected[k] + 0.1 * recorder.snapshots[step][k]
    teacher = dict(trainer.teacher.model.base_model.named_parameters())
    for k, v in expected.items():
        torch.testing.assert_close(teacher[k], v, rtol=1e-5, atol=1e-7)
    assert trainer.teacher.num_updates == 3
    # the student really moved, so a teacher that never updated would fail the comparison above
    moved = max((recorder.snapshots[6][k] - source_before.base_model.get_parameter(k)).abs().max() for k in expected)
    assert moved > 1e-3


def test_buffers_are_not_averaged_by_default(tmp_path):
    trainer, source_before, _ = train_smile(tmp_path)
    for (name, before), after in zip(source_before.named_buffers(), trainer.teacher.model.buffers()):
        assert torch.equal(before, after), name


def test_heads_untouched_by_ema_and_no_gradient_reaches_teacher(tmp_path):
    trainer, source_before, _ = train_smile(tmp_path)
    teacher = trainer.teacher.model
    torch.testing.assert_close(teacher.classifier[1].weight, source_before.classifier[1].weight, rtol=0, atol=0)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    student = trainer.model
    assert student.classifier[1].weight.shape[0] == 3  # the target head, never mixed with the 7-class source head
    # the student's heads receive gradients; the teacher's parameters are not in the optimizer
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(getattr(student, SOURCE_HEAD_NAME).weight) in optimized
    assert not optimized & {id(p) for p in teacher.parameters()}


def test_update_changes_only_the_teacher_backbone():
    source, student = source_and_student("vit")
    adapter = BackboneAdapter(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student_before = copy.deepcopy(student.state_dict())
    teacher_head_before = copy.deepcopy(source.classifier.state_dict())
    teacher = EmaTeacher(source, adapter, decay=0.75, update_every=1)
    old = {k: v.clone() for k, v in source.base_model.named_parameters()}
    teacher.update(student)
    for k, v in source.base_model.named_parameters():
        torch.testing.assert_close(v, 0.75 * old[k] + 0.25 * student.base_model.get_parameter(k), rtol=0, atol=1e-6)
    for k, v in student.state_dict().items():
        assert torch.equal(v, student_before[k]), k
    for k, v in source.classifier.state_dict().items():
        assert torch.equal(v, teacher_head_before[k]), k


def test_no_ema_in_final_phase(tmp_path):
    # 10 steps, last 30% plain: updates after steps 1..7 only (every step), none after steps 8, 9, 10
    trainer, _, _ = train_smile(tmp_path, max_steps=10, ema_update_every=1, final_finetune_fraction=0.3)
    assert trainer.teacher.num_updates == 7
    logs = [h for h in trainer.state.log_history if "loss_main" in h]
    assert [("loss_reg" in h) for h in logs] == [True] * 7 + [False] * 3


def test_decay_one_keeps_teacher_fixed(tmp_path):
    trainer, source_before, _ = train_smile(tmp_path, ema_decay=1.0)
    assert trainer.teacher.num_updates == 0
    for a, b in zip(trainer.teacher.model.parameters(), source_before.parameters()):
        assert torch.equal(a, b)


def test_teacher_is_a_module_with_standard_state_dict_and_to():
    source, student = source_and_student("resnet")
    adapter = BackboneAdapter(student)
    teacher = EmaTeacher(source, adapter, decay=0.5, update_every=1)
    assert isinstance(teacher, torch.nn.Module) and not teacher.training
    teacher.train()
    assert not teacher.training and not teacher.model.training  # a teacher never switches to training mode
    teacher.update(student)
    state = teacher.state_dict()
    assert set(state) == {f"model.{k}" for k in source.state_dict()} | {"num_updates"}
    assert state["num_updates"].dtype == torch.int64 and int(state["num_updates"]) == 1

    other = EmaTeacher(copy.deepcopy(source), adapter, decay=0.5, update_every=1)
    with torch.no_grad():
        for p in other.model.parameters():
            p.zero_()
    other.load_state_dict(state)
    assert int(other.num_updates) == 1
    for a, b in zip(other.model.parameters(), teacher.model.parameters()):
        assert torch.equal(a, b)

    # `to` converts model and counter the standard way, and the EMA pairs follow the converted tensors
    other.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in other.model.parameters()) and other.num_updates.dtype == torch.int64
    before = {k: v.clone() for k, v in other.model.base_model.named_parameters()}
    other.update(student)
    for k, v in other.model.base_model.named_parameters():
        expected = 0.5 * before[k] + 0.5 * student.base_model.get_parameter(k).double()
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-12)
    assert int(other.num_updates) == 2


def test_delta_teacher_is_a_fixed_teacher_that_loads_the_former_ema_teacher_state(tmp_path, torch_device):
    """DELTA's teacher is a `FixedTeacher`; its `state_dict` is the one an `EmaTeacher` of decay 1 (its former form)
    wrote, so such a saved state loads into it unchanged, and the teacher then computes what the saved one did."""
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method="delta"
    )
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
    teacher = trainer.teacher
    assert type(teacher) is FixedTeacher and not teacher.should_update(10)
    with pytest.raises(RuntimeError, match="never follows the student"):
        teacher.update(student)

    former_source, _ = source_and_student("resnet")
    with torch.no_grad():  # a saved teacher that differs from the pre-trained one, in weights and BatchNorm statistics
        for t in [*former_source.parameters(), *former_source.buffers()]:
            if t.is_floating_point():
                t.add_(0.01 * torch.randn_like(t))
    former = EmaTeacher(former_source, BackboneAdapter(former_source), decay=1.0).to(teacher.num_updates.device)
    saved = {k: v.detach().cpu().clone() for k, v in former.state_dict().items()}
    assert set(saved) == set(teacher.state_dict())
    teacher.load_state_dict(saved)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value.cpu(), saved[key]), key
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=teacher.num_updates.device)
    torch.testing.assert_close(teacher(images).logits, former(images).logits, rtol=0, atol=0)
