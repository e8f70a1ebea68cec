"""Non-blocking copies only where pinned memory takes effect: no `non_blocking is enabled but dataloader_pin_memory
is not` warning on a CPU run."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers.utils import logging as hf_logging

from smile_hf import SmileTrainer, SmileTrainingArguments

from .testing_utils import TINY_CONFIGS


def accelerator_available() -> bool:
    return torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()


@pytest.mark.parametrize("use_cpu", [True, False])
def test_non_blocking_follows_effective_pinned_memory(tmp_path, use_cpu):
    args = SmileTrainingArguments(output_dir=str(tmp_path), use_cpu=use_cpu, report_to="none")
    assert args.accelerator_config.non_blocking == (not use_cpu and accelerator_available())
    pinned = SmileTrainingArguments(
        output_dir=str(tmp_path), use_cpu=use_cpu, accelerator_config={"non_blocking": True}
    )
    assert pinned.accelerator_config.non_blocking  # what the user sets is kept


@pytest.mark.skipif(
    accelerator_available(), reason="the warning this test looks for is the one of machines without one"
)
def test_a_run_without_accelerator_does_not_warn(tmp_path, caplog):
    from transformers import AutoModelForImageClassification

    args = SmileTrainingArguments(output_dir=str(tmp_path), method="finetune", report_to="none")  # use_cpu unset
    args.dataloader_pin_memory = False  # as run_smile.py sets it without an accelerator, after the arguments are built
    model = AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"](3))
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            SmileTrainer(model=model, args=args)
    finally:
        hf_logging.disable_propagation()
    assert "non_blocking" not in caplog.text
