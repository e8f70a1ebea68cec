"""The `Trainer` contract of SmileTrainer: its signature is the stock one spelled out (plus its own arguments), a plain
`TrainingArguments` is converted keeping every value, and evaluation logs the method's loss terms (`eval_loss_*`),
checked against the terms computed here from the models' own outputs."""

from __future__ import annotations

import inspect
import logging
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME
from smile_hf.config import NOT_SET_FIELDS
from smile_hf.model_card import training_results

from .testing_utils import random_image_dataset, source_and_student, training_device_args

OWN_ARGUMENTS = ("teacher_model", "peft_config", "unlabeled_dataset")


def test_the_signature_spells_out_every_argument_of_the_installed_trainer():
    """Every `Trainer.__init__` parameter of the installed transformers, in its order and with its default, then
    SmileTrainer's own; no catch-all, so that a new Trainer parameter fails here until it is spelled out."""
    stock = [p for name, p in inspect.signature(Trainer.__init__).parameters.items() if name != "self"]
    ours = [p for name, p in inspect.signature(SmileTrainer.__init__).parameters.items() if name != "self"]
    assert not [p.name for p in ours if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert [p.name for p in ours] == [p.name for p in stock] + list(OWN_ARGUMENTS)
    for mine, theirs in zip(ours, stock):
        assert mine.kind == theirs.kind and mine.default == theirs.default, mine.name
    documented = SmileTrainer.__doc__
    assert all(f"\n        {p.name} (" in documented for p in ours), "every argument has its Args: entry"


def _field_values(args) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(TrainingArguments)}


def test_plain_training_arguments_are_converted_keeping_every_value(tmp_path, caplog):
    source, student = source_and_student("resnet")
    device = training_device_args()
    plain = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", **device, learning_rate=0.003, lr_scheduler_type="cosine",
        gradient_accumulation_steps=3, max_steps=7, warmup_steps=2, seed=11, label_smoothing_factor=0.1,
        logging_steps=3, save_strategy="no", per_device_eval_batch_size=5,
    )  # fmt: skip
    stock = TrainingArguments(output_dir=str(tmp_path), report_to="none", **device)
    untouched = [n for n in NOT_SET_FIELDS if getattr(plain, n) == getattr(stock, n)]
    assert {"optim", "weight_decay", "max_grad_norm", "per_device_train_batch_size"} <= set(untouched)
    expected = _field_values(plain)
    with caplog.at_level(logging.INFO, logger="smile_hf.trainer"):
        trainer = SmileTrainer(model=student, args=plain, teacher_model=source, train_dataset=random_image_dataset(8))
    args = trainer.args
    assert type(args) is SmileTrainingArguments and args.method == "smile" and not args.reference_recipe_applied
    converted = _field_values(args)
    assert [n for n in expected if converted[n] != expected[n]] == []
    for name in untouched:  # the stock values a plain TrainingArguments holds are kept, not replaced by a recipe
        assert converted[name] == getattr(stock, name)
    assert args.remove_unused_columns is True and args.label_names is None  # kept, though our defaults differ
    records = [r for r in caplog.records if r.name == "smile_hf.trainer" and "Converted" in r.getMessage()]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 1 and "\n" not in lines[0] and records[0].levelno == logging.WARNING
    assert "Converted TrainingArguments to SmileTrainingArguments" in lines[0]
    assert "remove_unused_columns=True" in lines[0] and "logging_nan_inf_filter=True" in lines[0]
    assert trainer.loss_fn.target_loss.label_smoothing == 0.1 and trainer.loss_fn.seed == 11  # and they are used


def test_plain_training_arguments_with_our_defaults_log_one_info_line(tmp_path, caplog):
    source, student = source_and_student("resnet")
    plain = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), remove_unused_columns=False,
        label_names=["labels"], ddp_find_unused_parameters=False, logging_nan_inf_filter=False,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="smile_hf.trainer"):
        trainer = SmileTrainer(model=student, args=plain, teacher_model=source, train_dataset=random_image_dataset(8))
    records = [r for r in caplog.records if r.name == "smile_hf.trainer" and "Converted" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO and "keeping every value" in records[0].getMessage()
    assert _field_values(trainer.args) == _field_values(plain)


def _independent_smile_terms(student, teacher, dataset, batch_size: int) -> dict[str, float]:
    """SMILE's terms on unmixed evaluation batches, from the HF outputs of the two models: L_main = CE, L_aux = soft
    CE of the student's source head (on its pooled feature) against the teacher's probabilities, L_reg = Frobenius
    norm of the difference of the last feature maps over the batch / (H W), L_cls = 1/2 squared norm of both heads.
    Means over the examples (a batch's value weighs its size)."""
    sums, count = dict.fromkeys(["main", "aux", "reg", "cls"], 0.0), 0
    heads = [student.classifier, getattr(student, SOURCE_HEAD_NAME)]
    cls = 0.5 * sum(p.double().square().sum() for h in heads for p in h.parameters()).item()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = dataset[start : start + batch_size]
            x = batch["pixel_values"].to(student.device)
            y = batch["labels"].to(student.device)
            s = student(pixel_values=x, output_hidden_states=True)
            t = teacher(pixel_values=x, output_hidden_states=True)
            pooled = student.resnet(pixel_values=x).pooler_output.flatten(1)
            source_logits = getattr(student, SOURCE_HEAD_NAME)(pooled)
            aux = -(t.logits.softmax(-1) * source_logits.log_softmax(-1)).sum(-1).mean()
            student_map, teacher_map = s.hidden_states[-1], t.hidden_states[-1]
            reg = torch.linalg.vector_norm(teacher_map - student_map) / (student_map.shape[-2] * student_map.shape[-1])
            values = {"main": F.cross_entropy(s.logits, y), "aux": aux, "reg": reg}
            for name, value in values.items():
                sums[name] += value.item() * len(y)
            count += len(y)
    return {**{name: total / count for name, total in sums.items() if name != "cls"}, "cls": cls}


def test_evaluation_logs_the_loss_terms_of_the_method(tmp_path):
    """`eval_loss_<term>` for each SMILE term, equal to the terms computed independently on the evaluation batches
    (10 images in batches of 4, 4, 2: the means weigh the examples, so `eval_loss_main` is `eval_loss`); none before
    training (the method's state does not exist yet); `eval_<name>_loss_<term>` for a dict of evaluation sets."""
    source, student = source_and_student("resnet")
    evaluation = random_image_dataset(10, seed=1)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method="smile",
        max_steps=2, ema_update_every=1, ema_decay=0.5, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        learning_rate=0.05, logging_steps=1,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8), eval_dataset=evaluation
    )
    before = trainer.evaluate()
    assert "eval_loss" in before and not [k for k in before if k.startswith("eval_loss_")]
    trainer.train()
    metrics = trainer.evaluate()
    assert trainer.teacher.num_updates == 2  # the teacher moved away from the source model: its own outputs count
    expected = _independent_smile_terms(trainer.model.eval(), trainer.teacher.model, evaluation, batch_size=4)
    for name, value in expected.items():  # float32 forward passes against float64 sums: 1e-5 relative
        assert metrics[f"eval_loss_{name}"] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert metrics["eval_loss_main"] == pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert {f"eval_loss_{n}" for n in expected} <= set(trainer.state.log_history[-1])  # logged, as returned
    by_name = trainer.evaluate(eval_dataset={"held": evaluation})
    assert by_name["eval_held_loss_aux"] == pytest.approx(metrics["eval_loss_aux"], rel=1e-6)
    card_metrics = training_results(trainer.state.log_history).eval_metrics  # the card's results: metrics, not terms
    assert "held_loss" in card_metrics and not [k for k in card_metrics if "loss_" in k]


def test_eval_loss_terms_false_evaluates_at_the_stock_cost(tmp_path):
    """`eval_loss_terms=False`: the same `eval_loss` as with the terms, no `eval_loss_<term>`, and no forward pass of
    the teacher during evaluation (counted by a hook on the teacher's model)."""
    source, student = source_and_student("resnet")
    evaluation = random_image_dataset(10, seed=1)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method="smile",
        max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=0.05,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8), eval_dataset=evaluation
    )
    trainer.train()
    teacher_calls = []
    trainer.teacher.model.register_forward_hook(lambda *_: teacher_calls.append(1))
    with_terms = trainer.evaluate()
    assert teacher_calls and "eval_loss_reg" in with_terms
    teacher_calls.clear()
    trainer.args.eval_loss_terms = False
    without = trainer.evaluate()
    assert not teacher_calls and not [k for k in without if k.startswith("eval_loss_")]
    assert without["eval_loss"] == with_terms["eval_loss"]  # the same forward passes of the student: equal bit for bit


@pytest.mark.parametrize("method", ["smile", "delta"])
def test_evaluation_terms_read_the_evaluation_forward_pass(method, tmp_path):
    """The loss terms of an evaluation batch read the student's features from the stock evaluation forward pass: one
    forward pass of the student per batch (counted by a hook), with the same metrics, bit for bit, as the former path
    that ran the student a second time (forced here), whose count is two."""
    source, student = source_and_student("resnet")
    evaluation = random_image_dataset(10, seed=1)  # batches of 4, 4, 2
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), save_strategy="no", method=method,
        max_steps=2, ema_update_every=1, ema_decay=0.5, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        learning_rate=0.05, delta_attention=False,
    )  # fmt: skip
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8), eval_dataset=evaluation
    )
    trainer.train()
    student_calls, teacher_calls = [], []
    trainer.model.register_forward_hook(lambda *_: student_calls.append(1))
    trainer.teacher.model.register_forward_hook(lambda *_: teacher_calls.append(1))
    metrics = trainer.evaluate()
    assert (len(student_calls), len(teacher_calls)) == (3, 3)
    assert [k for k in metrics if k.startswith("eval_loss_") and k != "eval_loss_main"]
    student_calls.clear()
    trainer._reads_evaluation_student = lambda: False  # the former path: a second forward pass of the student
    former = trainer.evaluate()
    assert len(student_calls) == 6
    assert {k: v for k, v in metrics.items() if "loss" in k} == {k: v for k, v in former.items() if "loss" in k}


def test_arguments_of_another_trainer_are_refused_in_one_line(tmp_path):
    """A `TrainingArguments` subclass with fields of its own (another library's) cannot be converted without losing
    them: refused, naming them."""
    from transformers import Seq2SeqTrainingArguments

    source, student = source_and_student("resnet")
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args())
    with pytest.raises(TypeError, match="Seq2SeqTrainingArguments has fields SmileTrainingArguments lacks") as error:
        SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
    assert "predict_with_generate" in str(error.value) and "\n" not in str(error.value)
