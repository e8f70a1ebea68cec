"""Diverged runs: a non-finite loss term stops training (or skips the step) before the weights change, and nothing
non-finite is ever saved or scored."""

from __future__ import annotations

import os

import numpy as np
import pytest
import safetensors.torch
import torch
from transformers import EvalPrediction, TrainerCallback

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.checkpoints import is_complete_checkpoint, list_checkpoints
from smile_hf.guard import NonFiniteLossError, NonFiniteWeightsError
from smile_hf.metrics import ClassificationMetrics

from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .testing_utils import random_image_dataset, source_and_student, training_device_args


def make_trainer(tmp_path, callbacks=(), collator=None, **kwargs):
    source, student = source_and_student("resnet")
    defaults = dict(max_steps=6, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1, save_strategy="no")
    defaults.update(kwargs)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method="smile", **defaults
    )
    return SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(24),
        callbacks=list(callbacks), data_collator=collator,
    )  # fmt: skip


class PoisonHeadBefore(TrainerCallback):
    """Sets the new head's weights to +inf when optimizer step `step` (1-based) begins."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                model.classifier[1].weight.fill_(float("inf"))


class Snapshots(TrainerCallback):
    def __init__(self):
        self.after = {}

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        momentum = [optimizer.state[p].get("momentum_buffer") for p in model.parameters() if p in optimizer.state]
        self.after[state.global_step] = (
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.clone() for m in momentum if m is not None],
        )


class NanBatches:
    """The default collator, with NaN images in the batches whose (0-based) call index is in `calls`."""

    def __init__(self, calls):
        self.calls, self.count = set(calls), 0

    def __call__(self, examples):
        batch = {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.stack([e["labels"] for e in examples]),
        }
        if self.count in self.calls or "all" in self.calls:
            batch["pixel_values"] = torch.full_like(batch["pixel_values"], float("nan"))
        self.count += 1
        return batch


def test_stop_at_step_stops_before_the_weights_change_and_names_the_term(tmp_path):
    trainer = make_trainer(
        tmp_path, [PoisonHeadBefore(4)], save_strategy="steps", save_steps=1, nan_policy="stop_at_step"
    )
    with pytest.raises(NonFiniteLossError, match=r"diverged at step 4: .*loss_main=nan") as error:
        trainer.train()
    assert "last finite values (step 3): loss_main=" in str(error.value) and "nan_policy='skip_step'" in str(error.value)
    assert trainer.state.global_step == 3  # step 4 was never applied
    backbone = [p for n, p in trainer.model.named_parameters() if not n.startswith("classifier.")]
    assert all(torch.isfinite(p).all() for p in backbone)
    # every checkpoint written is complete and finite; none after the divergence
    steps = [step for step, _ in list_checkpoints(str(tmp_path))]
    assert steps == [1, 2, 3]
    for _, path in list_checkpoints(str(tmp_path)):
        assert is_complete_checkpoint(path)
        weights = safetensors.torch.load_file(os.path.join(path, "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("logging_steps, save_steps, found_at", [(2, 100, 4), (100, 3, 6), (100, 100, 8)])
def test_stop_raises_at_the_next_log_save_or_end_naming_the_first_bad_step(tmp_path, logging_steps, save_steps,
                                                                          found_at):
    """`nan_policy="stop"` (the default) reads the loss only when the run logs, saves or ends: poisoned from step 4
    on, the run stops at the first of these after step 4, the error names step 4 and the values of step 3, and no
    checkpoint after step 3 is written."""
    trainer = make_trainer(
        tmp_path, [PoisonHeadBefore(4)], collator=NanBatches({5, 6, 7}), max_steps=8, logging_steps=logging_steps,
        save_strategy="steps", save_steps=save_steps,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"diverged at step 4: .*loss_main=nan") as error:
        trainer.train()
    message = str(error.value)
    assert "last finite values (step 3): loss_main=" in message and f"Found at step {found_at}," in message
    assert trainer.state.global_step == found_at
    assert all(step <= 3 for step, _ in list_checkpoints(str(tmp_path)))


def test_stop_reports_the_first_bad_step_across_the_final_phase(tmp_path):
    """Terms differ in SMILE's final plain phase (no aux/reg): a divergence at its first step is named with its own
    terms, and the last finite values are those of the step before, from the mixing phase's terms."""
    trainer = make_trainer(tmp_path, [PoisonHeadBefore(6)], max_steps=9, logging_steps=100, final_finetune_fraction=0.4)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    assert trainer.final_phase_start == 9 - round(9 * 0.4) == 5  # 0-based: step 6 is the first plain one
    bad, last = str(error.value).split("; last finite values ")
    assert bad == "Training diverged at step 6: loss_main=nan, loss_cls=inf not finite"
    assert last.startswith("(step 5): loss_main=") and "loss_reg=" in last.split("(Found")[0]


def test_a_huge_learning_rate_stops_the_run(tmp_path):
    for policy in ("stop", "stop_at_step"):
        trainer = make_trainer(tmp_path / policy, learning_rate=1e6, max_steps=30, optim="sgd", nan_policy=policy)
        with pytest.raises(NonFiniteLossError, match="diverged at step"):
            trainer.train()


def test_skip_step_leaves_weights_and_optimizer_state_unchanged(tmp_path):
    snapshots = Snapshots()
    trainer = make_trainer(tmp_path, [snapshots], NanBatches({2}), nan_policy="skip_step", optim="sgd",
                           optim_args="momentum=0.9")  # fmt: skip
    trainer.train()
    assert trainer.guard.skipped_steps == [3] and trainer.state.global_step == 6
    before, after = snapshots.after[2], snapshots.after[3]
    for key, value in before[0].items():
        if "num_batches_tracked" not in key:  # parameters, and BatchNorm statistics restored after the NaN batch
            assert torch.equal(value, after[0][key]), key
    assert len(before[1]) == len(after[1]) > 0 and all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
    assert not torch.equal(snapshots.after[4][0]["classifier.1.weight"], after[0]["classifier.1.weight"])  # trains on
    trainer.save_model(str(tmp_path / "export"))  # nothing non-finite left behind


def test_skip_step_gives_up_after_max_consecutive_skips(tmp_path):
    trainer = make_trainer(tmp_path, collator=NanBatches({"all"}), nan_policy="skip_step", max_consecutive_skips=2)
    with pytest.raises(NonFiniteLossError, match="diverged at step 3.*2 steps in a row were skipped"):
        trainer.train()
    assert trainer.guard.skipped_steps == [1, 2]


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = make_trainer(tmp_path)
    with torch.no_grad():
        trainer.model.classifier[1].bias[0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="classifier.1.bias"):
        trainer.save_model(str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


def test_metrics_refuse_non_finite_logits():
    logits = np.array([[1.0, 0.0], [np.nan, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="1 of the 3 evaluated examples have non-finite logits"):
        ClassificationMetrics(top_k=(1,))(EvalPrediction(predictions=logits, label_ids=np.array([0, 0, 1])))
