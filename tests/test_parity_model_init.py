"""`model_init` and `hyperparameter_search`, user optimizers, and `load_best_model_at_end` under SmileTrainer."""

from __future__ import annotations

import os

import pytest
import safetensors.torch
import torch
from transformers import TrainerCallback

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME, unwrap_model
from smile_hf.method_state import METHOD_STATE_NAME

from .testing_utils import random_image_dataset, source_and_student, training_device_args


def arguments(tmp_path, **kwargs) -> SmileTrainingArguments:
    base = dict(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", per_device_train_batch_size=4, max_steps=3,
        optim="sgd", learning_rate=0.05, ema_update_every=1, logging_steps=1, **training_device_args(),
    )  # fmt: skip
    return SmileTrainingArguments(**{**base, **kwargs})


class ModelFactory:
    """A `model_init` that counts its calls and keeps every model it made."""

    def __init__(self):
        self.made = []

    def __call__(self):
        _, student = source_and_student("resnet")
        self.made.append(student)
        return student


def test_model_init_builds_the_smile_parts_for_each_new_model(tmp_path):
    source, _ = source_and_student("resnet")
    pristine = {k: v.clone() for k, v in source.state_dict().items()}
    factory = ModelFactory()
    trainer = SmileTrainer(
        model=None, model_init=factory, teacher_model=source, args=arguments(tmp_path, method="smile"),
        train_dataset=random_image_dataset(16),
    )  # fmt: skip
    assert len(factory.made) == 1 and trainer.model is factory.made[0]
    for run in (1, 2):  # the stock Trainer makes a new model at every train()
        trainer.train()
        assert len(factory.made) == 1 + run and trainer.model is factory.made[-1]
        model = unwrap_model(trainer.model)
        assert hasattr(model, SOURCE_HEAD_NAME)  # the source head of the new model, trained by the new optimizer
        held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        assert all(id(p) in held for p in getattr(model, SOURCE_HEAD_NAME).parameters())
        assert int(trainer.teacher.num_updates) == 3  # a new EMA state, updated at each of the 3 steps
        assert trainer._method_ready  # the new method's one-off setup ran for the new model
    for k, v in source.state_dict().items():  # the teacher model passed is never moved by the EMA
        assert torch.equal(v, pristine[k]), k


def test_model_init_with_optimizers_is_refused_in_one_line(tmp_path):
    _, student = source_and_student("resnet")
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs") as error:
        SmileTrainer(model=None, model_init=ModelFactory(), args=arguments(tmp_path, method="finetune"),
                     optimizers=(optimizer, None))  # fmt: skip
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="exactly one of `model`"):
        SmileTrainer(model=student, model_init=ModelFactory(), args=arguments(tmp_path, method="finetune"))


class RecordTrial(TrainerCallback):
    """Records, at the first step of each trial, the values the trial's training really uses: the weight of SMILE's
    L_reg term in the loss, the mixup alpha of the loss and the teacher's EMA decay."""

    def __init__(self, trainer_box, batch):
        self.trainer_box, self.batch, self.seen = trainer_box, batch, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step != 1:
            return
        trainer = self.trainer_box[0]
        pixel_values, labels = (t.to(args.device) for t in self.batch)
        output = trainer.loss_fn(trainer.model, pixel_values, labels, trainer.loss_fn.draw_mix(pixel_values, model, 0))
        self.seen.append({
            "trial": dict(trainer._trial.params), "reg_weight": output.terms["reg"][0], "alpha": trainer.loss_fn.alpha,
            "ema_decay": trainer.teacher.decay, "model": id(trainer.model),
        })  # fmt: skip


def test_hyperparameter_search_trains_each_trial_with_its_own_values(tmp_path):
    optuna = pytest.importorskip("optuna", reason="hyperparameter_search needs the optional `optuna` (smile_hf[tune])")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source, _ = source_and_student("resnet")
    data = random_image_dataset(12)[:]
    box = []
    recorder = RecordTrial(box, (data["pixel_values"][:4], data["labels"][:4]))
    trainer = SmileTrainer(
        model=None, model_init=ModelFactory(), teacher_model=source, args=arguments(tmp_path, method="smile"),
        train_dataset=random_image_dataset(12), eval_dataset=random_image_dataset(8, seed=1), callbacks=[recorder],
    )  # fmt: skip
    box.append(trainer)

    def hp_space(trial):
        return {
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 1.0, log=True),
            "mixup_alpha": trial.suggest_float("mixup_alpha", 0.1, 2.0),
            "ema_decay": trial.suggest_float("ema_decay", 0.5, 0.99),
        }

    best = trainer.hyperparameter_search(
        hp_space=hp_space, backend="optuna", n_trials=3, direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    assert len(recorder.seen) == 3 and len({s["model"] for s in recorder.seen}) == 3  # a new model per trial
    for seen in recorder.seen:
        trial = seen["trial"]
        assert seen["reg_weight"] == pytest.approx(trial["reg_lambda"])
        assert seen["alpha"] == pytest.approx(trial["mixup_alpha"])
        assert seen["ema_decay"] == pytest.approx(trial["ema_decay"])
    assert len({s["trial"]["reg_lambda"] for s in recorder.seen}) == 3  # three different draws
    assert set(best.hyperparameters) == {"reg_lambda", "mixup_alpha", "ema_decay"}


def test_an_invalid_trial_value_gets_the_arguments_one_line_error(tmp_path):
    optuna = pytest.importorskip("optuna", reason="hyperparameter_search needs the optional `optuna` (smile_hf[tune])")
    trainer = SmileTrainer(
        model=None, model_init=ModelFactory(), teacher_model=source_and_student("resnet")[0],
        args=arguments(tmp_path, method="smile"), train_dataset=random_image_dataset(8),
        eval_dataset=random_image_dataset(4),
    )  # fmt: skip
    with pytest.raises(ValueError, match="`ema_decay` must be in"):
        trainer.hyperparameter_search(
            hp_space=lambda trial: {"ema_decay": trial.suggest_float("ema_decay", 1.5, 2.0)}, backend="optuna",
            n_trials=1, sampler=optuna.samplers.RandomSampler(seed=0),
        )  # fmt: skip


@pytest.mark.parametrize("case", ["peft", "source_head"])
def test_a_user_optimizer_that_misses_trained_parameters_is_refused(case, tmp_path):
    source, student = source_and_student("resnet")
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)  # built before SmileTrainer adds anything
    kwargs = {"method": "finetune"} if case == "peft" else {"method": "smile"}
    extra = {}
    if case == "peft":
        peft = pytest.importorskip("peft", reason="LoRA needs the optional `peft` package")
        extra["peft_config"] = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["convolution"])
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs") as error:
        SmileTrainer(model=student, teacher_model=source, args=arguments(tmp_path, **kwargs),
                     optimizers=(optimizer, None), **extra)  # fmt: skip
    assert "\n" not in str(error.value) and ("lora" in str(error.value)) == (case == "peft")


def test_a_user_optimizer_and_schedule_that_cover_the_model_are_used(tmp_path):
    _, student = source_and_student("resnet")
    start = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    trainer = SmileTrainer(
        model=student, args=arguments(tmp_path, method="finetune", reference_recipe=True),
        optimizers=(optimizer, schedule), train_dataset=random_image_dataset(16),
    )  # fmt: skip
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs == pytest.approx([0.1, 0.05, 0.025])  # the user's schedule, not the recipe's step decay
    assert trainer.lr_scheduler is schedule
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items())


def test_optimizer_cls_and_kwargs_trains_the_lora_layers_and_the_source_head(tmp_path):
    peft = pytest.importorskip("peft", reason="LoRA needs the optional `peft` package")
    source, student = source_and_student("resnet")
    trainer = SmileTrainer(
        model=student, teacher_model=source, args=arguments(tmp_path, method="smile"),
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}), train_dataset=random_image_dataset(16),
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules=["convolution"], init_lora_weights="gaussian"),
    )  # fmt: skip
    trained = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trained) and any(SOURCE_HEAD_NAME in n for n in trained)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    unchanged = [n for n, v in trained.items() if torch.equal(after[n].detach(), v)]
    assert not unchanged


def test_load_best_model_at_end_restores_the_teacher_and_source_head_of_the_best_checkpoint(tmp_path):
    source, student = source_and_student("resnet")
    scores = iter([1.0, 0.0, 0.0])  # the first evaluation (step 1) is the best

    def score(eval_pred):
        return {"score": next(scores)}

    trainer = SmileTrainer(
        model=student, teacher_model=source, train_dataset=random_image_dataset(16),
        eval_dataset=random_image_dataset(8, seed=1), compute_metrics=score,
        args=arguments(
            tmp_path, method="smile", save_strategy="steps", save_steps=1, eval_strategy="steps", eval_steps=1,
            load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True,
        ),
    )  # fmt: skip
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and best.endswith("checkpoint-1")
    saved = safetensors.torch.load_file(os.path.join(best, METHOD_STATE_NAME))
    last = safetensors.torch.load_file(os.path.join(str(tmp_path), "checkpoint-3", METHOD_STATE_NAME))
    now = trainer.method_state_dict()
    assert int(now["teacher.num_updates"]) == 1
    assert any(not torch.equal(saved[k], last[k]) for k in saved if k.startswith(("teacher.model", "source_head")))
    for k, v in saved.items():
        torch.testing.assert_close(now[k], v, rtol=0, atol=0)
