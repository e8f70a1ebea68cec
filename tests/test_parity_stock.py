"""`method="finetune"` under SmileTrainer trains, logs, evaluates and saves like the stock `Trainer` with the same
arguments: every stock field listed in `STOCK_RUN_FIELDS` set to a value other than its default, and the stock
`callbacks` and `preprocess_logits_for_metrics` arguments. The tiny ViT has no BatchNorm and no dropout, so both runs
do the same float operations."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T
from transformers import TrainerCallback

from smile_hf import SmileTrainer, SmileTrainingArguments

from .testing_utils import ON_ACCELERATOR, random_image_dataset, source_and_student, training_device_args

STOCK_RUN_FIELDS = dict(
    per_device_train_batch_size=4, num_train_epochs=2, gradient_accumulation_steps=2, learning_rate=0.05,
    lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": 2}, warmup_steps=1,
    optim="adamw_torch", weight_decay=0.01, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6, max_grad_norm=0.5,
    label_smoothing_factor=0.1, torch_empty_cache_steps=1, bf16_full_eval=True,
    logging_strategy="steps", logging_steps=1, logging_first_step=True, log_on_each_node=False, log_level="warning",
    log_level_replica="error", disable_tqdm=True, report_to="none", run_name="parity",
    eval_strategy="steps", eval_steps=2, eval_delay=1, per_device_eval_batch_size=3, prediction_loss_only=False,
    eval_on_start=True, eval_do_concat_batches=True, eval_use_gather_object=True, eval_accumulation_steps=1,
    include_for_metrics=["loss"], batch_eval_metrics=True,
    save_strategy="steps", save_steps=3, save_only_model=True, save_on_each_node=True,
    restore_callback_states_from_checkpoint=True, full_determinism=True, seed=3, data_seed=5,
    dataloader_drop_last=True, dataloader_num_workers=1, dataloader_prefetch_factor=2,
    dataloader_multiprocessing_context="fork", dataloader_in_order=False, train_sampling_strategy="sequential",
    ddp_bucket_cap_mb=5, ddp_broadcast_buffers=True, ddp_static_graph=True, ddp_timeout=600,
    debug="underflow_overflow", skip_memory_metrics=False,
)  # fmt: skip
"""Stock fields and their (non-default) values in the comparison."""
SAME_AS_SMILE_DEFAULTS = dict(
    remove_unused_columns=False, label_names=["labels"], ddp_find_unused_parameters=False, logging_nan_inf_filter=False
)
"""The fields whose SmileTrainingArguments default differs, given to the stock Trainer as SmileTrainer has them."""
TIMING_KEYS = ("runtime", "per_second", "total_flos", "mem_", "epoch")
OWN_TERMS = ("loss_", "eval_loss_")  # the loss terms SmileTrainer logs in training and evaluation


class BatchMetrics:
    """A `batch_eval_metrics` compute_metrics (with `include_for_metrics=["loss"]`): accuracy of the predictions that
    `preprocess_logits_for_metrics` turned into class ids, and the mean loss."""

    def __init__(self):
        self.correct, self.total, self.losses = 0, 0, []

    def __call__(self, eval_pred, compute_result: bool):
        self.correct += int((eval_pred.predictions == eval_pred.label_ids).sum())
        self.total += len(eval_pred.label_ids)
        self.losses.append(float(torch.as_tensor(eval_pred.losses).float().mean()))
        if not compute_result:
            return {}
        result = {"accuracy": self.correct / self.total, "mean_loss": float(np.mean(self.losses))}
        self.correct, self.total, self.losses = 0, 0, []
        return result


class CountEvents(TrainerCallback):
    def __init__(self):
        self.events = []

    def on_evaluate(self, args, state, control, **kwargs):
        self.events.append(("evaluate", state.global_step))

    def on_save(self, args, state, control, **kwargs):
        self.events.append(("save", state.global_step))


def predicted_class(logits, labels):
    return logits.argmax(dim=-1)


@pytest.fixture
def restore_determinism():
    """`full_determinism=True` switches torch's deterministic algorithms on for the whole process: switched back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def run(trainer_class, args_class, output_dir, extra: dict):
    _, student = source_and_student("vit")
    events = CountEvents()
    args = args_class(output_dir=str(output_dir), **training_device_args(), **STOCK_RUN_FIELDS, **extra)
    trainer = trainer_class(
        model=student, args=args, train_dataset=random_image_dataset(20), eval_dataset=random_image_dataset(7, seed=1),
        compute_metrics=BatchMetrics(), callbacks=[events], preprocess_logits_for_metrics=predicted_class,
    )  # fmt: skip
    trainer.train()
    final = trainer.evaluate()  # after training: in bf16 (bf16_full_eval)
    return trainer, events.events, final


def comparable(history):
    return [{k: v for k, v in h.items() if not any(t in k for t in TIMING_KEYS) and not k.startswith(OWN_TERMS)}
            for h in history]  # fmt: skip


@pytest.mark.skipif(ON_ACCELERATOR, reason="the CPU run: `dataloader_multiprocessing_context='fork'` and bf16 on CPU")
def test_finetune_trains_logs_evaluates_and_saves_like_the_stock_trainer(tmp_path, restore_determinism):
    stock, stock_events, stock_final = run(T.Trainer, T.TrainingArguments, tmp_path / "stock", SAME_AS_SMILE_DEFAULTS)
    ours, our_events, our_final = run(SmileTrainer, SmileTrainingArguments, tmp_path / "ours", {"method": "finetune"})
    assert our_events == stock_events and ("save", 3) in our_events and ("evaluate", 0) in our_events
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "stock"))
    history, expected = comparable(ours.state.log_history), comparable(stock.state.log_history)
    assert [sorted(h) for h in history] == [sorted(h) for h in expected]
    for got, want in zip(history, expected):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)  # the same float32 operations, summed alike
    # finetune's one term is the loss (bf16 evaluation: the stock mean is taken over bf16 values, 8-bit mantissa)
    assert our_final.pop("eval_loss_main") == pytest.approx(our_final["eval_loss"], rel=1e-2)
    assert {k: v for k, v in our_final.items() if not any(t in k for t in TIMING_KEYS)} == pytest.approx(
        {k: v for k, v in stock_final.items() if not any(t in k for t in TIMING_KEYS)}, rel=1e-3  # bf16 evaluation
    )
    for (name, p), q in zip(ours.model.state_dict().items(), stock.model.state_dict().values()):
        torch.testing.assert_close(p.float(), q.float(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(not ON_ACCELERATOR, reason="fp16 mixed precision needs a GPU (SMILE_HF_TEST_DEVICE=cuda)")
def test_fp16_finetune_matches_the_stock_trainer(tmp_path):
    fields = dict(per_device_train_batch_size=4, max_steps=4, learning_rate=0.05, report_to="none", logging_steps=1,
                  save_strategy="no", fp16=True, fp16_full_eval=True, seed=3)  # fmt: skip
    results = []
    for trainer_class, args_class, extra in (
        (T.Trainer, T.TrainingArguments, SAME_AS_SMILE_DEFAULTS), (SmileTrainer, SmileTrainingArguments, {"method": "finetune"})
    ):  # fmt: skip
        _, student = source_and_student("vit")
        args = args_class(output_dir=str(tmp_path / trainer_class.__name__), **fields, **extra, **training_device_args())
        trainer = trainer_class(model=student, args=args, train_dataset=random_image_dataset(16),
                                eval_dataset=random_image_dataset(8, seed=1))  # fmt: skip
        trainer.train()
        results.append(([h["loss"] for h in trainer.state.log_history if "loss" in h], trainer.evaluate()["eval_loss"]))
    (stock_losses, stock_eval), (our_losses, our_eval) = results
    assert our_losses == pytest.approx(stock_losses, rel=1e-3) and our_eval == pytest.approx(stock_eval, rel=1e-3)


def test_accumulation_on_resnet_averages_where_the_stock_trainer_doubles(tmp_path):
    """ResNet's forward accepts `num_items_in_batch` and ignores it, so the stock Trainer skips its division by the
    accumulation steps and logs (and trains on) the sum of the micro-batch losses; SmileTrainer's is their mean."""
    data = random_image_dataset(8)
    logged = {}
    for name in ("stock", "smile"):
        _, student = source_and_student("resnet")
        options = dict(output_dir=str(tmp_path / name), report_to="none", max_steps=1, per_device_train_batch_size=4,
                       gradient_accumulation_steps=2, learning_rate=0.0, logging_steps=1, save_strategy="no",
                       disable_tqdm=True, **training_device_args())  # fmt: skip
        if name == "stock":
            trainer = T.Trainer(model=student, args=T.TrainingArguments(**options, remove_unused_columns=False),
                                train_dataset=data)  # fmt: skip
        else:
            trainer = SmileTrainer(model=student, args=SmileTrainingArguments(**options, method="finetune"),
                                   train_dataset=data)  # fmt: skip
        trainer._get_train_sampler = lambda *a: torch.utils.data.SequentialSampler(data)
        trainer.train()
        logged[name] = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    _, student = source_and_student("resnet")
    student.train()  # BatchNorm on each micro-batch's statistics, as in training
    batch = data[:]
    pixel_values, labels = batch["pixel_values"].to(student.device), batch["labels"].to(student.device)
    with torch.no_grad():
        parts = [F.cross_entropy(student(pixel_values=pixel_values[i : i + 4]).logits, labels[i : i + 4]) for i in (0, 4)]
    assert logged["smile"] == pytest.approx(float(sum(parts)) / 2, rel=1e-5)
    assert logged["stock"] == pytest.approx(float(sum(parts)), rel=1e-5)
