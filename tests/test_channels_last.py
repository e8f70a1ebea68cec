"""`channels_last=True`: the student's and the teacher's convolution weights and the batches are channels-last, and
the loss and the trained weights are those of the default memory format (up to convolution rounding)."""

from __future__ import annotations

import torch

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.mixing import Mix

from .testing_utils import clone, random_image_dataset, source_and_student, training_device_args


def make_trainer(tmp_path, channels_last: bool):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile", max_steps=3, save_strategy="no",
        per_device_train_batch_size=4, disable_tqdm=True, channels_last=channels_last, final_finetune_fraction=0.0,
        **training_device_args(),
    )  # fmt: skip
    return SmileTrainer(model=clone(student), args=args, teacher_model=clone(source),
                        train_dataset=random_image_dataset(12))  # fmt: skip


def conv_weights(module):
    return [p for p in module.parameters() if p.dim() == 4]


def test_channels_last_weights_inputs_and_same_training(tmp_path, torch_device):
    fast, plain = make_trainer(tmp_path / "cl", True), make_trainer(tmp_path / "plain", False)
    for module in (fast.model, fast.teacher):
        weights = conv_weights(module)
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain.model))

    seen = []
    original = fast.adapter.forward
    fast.adapter.forward = lambda model, x, **kw: seen.append(x.is_contiguous(memory_format=torch.channels_last)) or \
        original(model, x, **kw)  # fmt: skip
    x, y = torch.randn(4, 3, 32, 32).to(torch_device), torch.tensor([0, 1, 2, 0], device=torch_device)
    mix = Mix("mixup", 0.8, torch.tensor([3, 2, 1, 0])).to(torch_device)
    loss_fast = fast.loss_fn(fast.model, x, y, mix).loss
    loss_plain = plain.loss_fn(plain.model, x, y, mix).loss
    assert seen == [True, True]  # student and teacher forward
    # convolution kernels of the two layouts sum in different orders: float32 rounding, relative 1e-5
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=0)

    fast.train(), plain.train()
    for (name, a), b in zip(fast.model.named_parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
