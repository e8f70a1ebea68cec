"""A training step never makes the host wait for the device: no operator of a step (forward, loss, backward,
clipping, optimizer, EMA and the other callbacks) reads a value back or has a data-dependent shape.

On the CPU nothing waits, so the operators themselves are checked ([`smile_hf.profiling.DispatchCounter`]); on CUDA
the steps that must not sync also run under `torch.cuda.set_sync_debug_mode("error")`. The controls show the counter
sees a sync when there is one: the stock `logging_nan_inf_filter` (two per micro-batch) and `nan_policy="stop_at_step"`
(one per optimizer step); they, and BSS, sync by design, so they run without the error mode."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode
from transformers import TrainerCallback

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.profiling import DispatchCounter

from .testing_utils import random_image_dataset, source_and_student, training_device_args

MAX_STEPS, FINAL_FRACTION = 4, 0.25  # SMILE's last step is in the final plain phase


class CountStepOperators(TrainerCallback):
    """Counts the operators of each optimizer step, from `on_step_begin` to the end of the `on_step_end` callbacks
    before it (the ones added earlier: the guard, the EMA teacher...). With `forbid_syncs`, a step on CUDA also runs
    under `torch.cuda.set_sync_debug_mode("error")`. `close()` exits the counter and restores the previous mode: the
    caller calls it when training stops, so that a step that raised leaves neither behind."""

    def __init__(self, forbid_syncs: bool):
        self.steps: list[DispatchCounter] = []
        self.forbid_syncs = forbid_syncs
        self._context = contextlib.ExitStack()

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append(self._context.enter_context(DispatchCounter()))
        if self.forbid_syncs and torch.cuda.is_available() and args.device.type == "cuda":
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            self._context.callback(torch.cuda.set_sync_debug_mode, previous)

    def on_step_end(self, args, state, control, **kwargs):
        self.close()

    def close(self):
        self._context.close()


def step_counters(tmp_path, method: str, forbid_syncs: bool = False, callbacks=(), **kwargs) -> list[DispatchCounter]:
    source, student = source_and_student("resnet")
    counter = CountStepOperators(forbid_syncs)
    defaults = dict(max_steps=MAX_STEPS, per_device_train_batch_size=4, logging_steps=100, save_strategy="no",
                    final_finetune_fraction=FINAL_FRACTION, report_to="none", disable_tqdm=True, **training_device_args())  # fmt: skip
    defaults.update(kwargs)
    args = SmileTrainingArguments(output_dir=str(tmp_path), method=method, **defaults)
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(32),
        callbacks=[*callbacks, counter],
    )  # fmt: skip
    try:
        trainer.train()
    finally:
        counter.close()
    assert len(counter.steps) == MAX_STEPS
    return counter.steps


@pytest.mark.parametrize(
    "method", ["finetune", "smile", "smile+cutmix", "l2sp", "delta", "rifle", "cotuning", "manifold_mixup",
               "delta+manifold_mixup", "l2sp+mixup"],  # fmt: skip
)
def test_no_host_sync_in_a_training_step(tmp_path, method):
    counters = step_counters(tmp_path, method, forbid_syncs=True, gradient_accumulation_steps=2, max_grad_norm=1.0)
    assert [c.host_syncs for c in counters] == [{}] * MAX_STEPS
    assert all(c.total > 0 for c in counters)


def test_bss_is_the_one_method_that_syncs(tmp_path):
    """BSS needs singular values, and `torch.linalg.svdvals` reads its error code back on CUDA: one sync per
    micro-batch (documented in docs/benchmarks.md), and nothing else."""
    counters = step_counters(tmp_path, "bss", gradient_accumulation_steps=2)
    assert [c.host_syncs for c in counters] == [{"aten::_linalg_svd": 2}] * MAX_STEPS


def test_the_counter_sees_the_stock_nan_filter_and_the_per_step_policies(tmp_path):
    filtered = step_counters(tmp_path / "filter", "smile", logging_nan_inf_filter=True, gradient_accumulation_steps=2)
    # `torch.isnan(loss) or torch.isinf(loss)`: two reads per finite micro-batch
    assert [c.host_syncs for c in filtered] == [{"aten::_local_scalar_dense": 4}] * MAX_STEPS
    for policy in ("stop_at_step", "skip_step"):
        checked = step_counters(tmp_path / policy, "smile", nan_policy=policy, gradient_accumulation_steps=2)
        assert [c.host_syncs for c in checked] == [{"aten::_local_scalar_dense": 1}] * MAX_STEPS


def test_a_step_that_raises_leaves_neither_the_counter_nor_the_sync_mode_behind(tmp_path):
    """The error mode (on CUDA) and the counter are entered at a step's start and left at its end: a step that raises
    before its end must not leave them active for the rest of the process (later tests of the same worker)."""

    class FailingStep(TrainerCallback):  # runs before the counter's `on_step_end`
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("a failing step")

    before = torch.cuda.get_sync_debug_mode() if torch.cuda.is_available() else None
    with pytest.raises(RuntimeError, match="a failing step"):
        step_counters(tmp_path, "finetune", forbid_syncs=True, callbacks=[FailingStep()])
    assert _get_current_dispatch_mode() is None
    if torch.cuda.is_available():
        assert torch.cuda.get_sync_debug_mode() == before
