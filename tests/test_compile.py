"""`torch_compile=True`: the student (compiled by the Trainer) and the teacher (compiled by SmileTrainer) are each
captured once, and stay so: the capture hooks are installed once, so that no step invalidates a compiled graph.
Run with dynamo's `eager` backend (the graph capture without code generation; the CPU has no inductor toolchain to
rely on), the training is the uncompiled one."""

from __future__ import annotations

import pytest
import torch

from smile_hf import SmileTrainer, SmileTrainingArguments

from .testing_utils import clone, random_image_dataset, source_and_student, training_device_args

dynamo = pytest.importorskip("torch._dynamo")


def train(tmp_path, compile_: bool) -> SmileTrainer:
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile", max_steps=6, save_strategy="no",
        per_device_train_batch_size=4, disable_tqdm=True, final_finetune_fraction=0.0, ema_update_every=2, logging_steps=1,
        torch_compile=compile_, torch_compile_backend="eager" if compile_ else None, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=clone(student), args=args, teacher_model=clone(source),
                           train_dataset=random_image_dataset(24))  # fmt: skip
    trainer.train()
    return trainer


def test_student_and_teacher_compile_once_and_train_as_uncompiled(tmp_path):
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    compiled = train(tmp_path / "compiled", True)
    frames = dict(counters["frames"])
    dynamo.reset()
    assert frames == {"total": 2, "ok": 2}, frames  # one graph each for student and teacher, never recompiled
    plain = train(tmp_path / "plain", False)
    for key in ("loss_main", "loss_aux", "loss_reg"):
        logged = [[e[key] for e in t.state.log_history if key in e] for t in (compiled, plain)]
        assert len(logged[0]) == 6
        assert logged[0] == pytest.approx(logged[1], rel=1e-5), key
    for (name, a), b in zip(compiled.teacher.named_parameters(), plain.teacher.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
