"""Mixed precision is honoured or refused: `fp16` on the CPU, which accelerate would silently leave in float32 (as the
stock `Trainer` shows), is refused in one line; `bf16` on the CPU takes effect (CPU autocast)."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainingArguments

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf import run as run_smile

from .test_run_reliability import tiny_argv
from .testing_utils import source_and_student

pytestmark = pytest.mark.cpu_only("the precision flags on the CPU")


def autocast_dtype(trainer: Trainer) -> torch.dtype:
    """The dtype a matrix product gets under the mixed-precision context of the trainer's accelerator (float32 when it does nothing)."""
    with trainer.accelerator.autocast():  # what wraps the forward passes of training
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def test_fp16_on_the_cpu_would_be_ignored_so_it_is_refused(tmp_path):
    _, student = source_and_student("resnet", device="cpu")
    stock = Trainer(model=student, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, fp16=True,
                                                          report_to="none"))  # fmt: skip
    assert stock.args.mixed_precision == "fp16" and autocast_dtype(stock) == torch.float32  # what would be ignored
    with pytest.raises(ValueError, match=r"`fp16=True` cannot take effect on the CPU .*--bf16 True"):
        SmileTrainingArguments(output_dir=str(tmp_path), use_cpu=True, fp16=True, report_to="none")
    with pytest.raises(run_smile.InputError, match=r"^`fp16=True` cannot take effect on the CPU"):
        run_smile.parse_args(tiny_argv(tmp_path, "--fp16", "True"))


def test_bf16_on_the_cpu_takes_effect(tmp_path):
    _, student = source_and_student("resnet", device="cpu")
    args = SmileTrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, method="finetune",
                                  report_to="none")  # fmt: skip
    assert autocast_dtype(SmileTrainer(model=student, args=args)) == torch.bfloat16
