"""SmileTrainingArguments: defaults of the reference, validation at construction, the reference recipe."""

from __future__ import annotations

import json

import pytest

from smile_hf import SmileTrainingArguments
from smile_hf.recipes import REFERENCE_LR_STEP_FRACTION


def make(**kwargs):
    return SmileTrainingArguments(output_dir="unused", report_to="none", **kwargs)


def test_reference_defaults():
    args = make()
    assert (args.method, args.regularizer, args.mixing) == ("smile", "smile", "mixup")
    assert (args.mixup_alpha, args.reg_lambda, args.aux_lambda, args.cls_lambda) == (0.2, 0.01, 0.1, 1e-4)
    assert (args.ema_decay, args.ema_update_every) == (0.999, 10)
    assert args.final_finetune_fraction == pytest.approx(1000 / 9000)
    assert REFERENCE_LR_STEP_FRACTION == pytest.approx(6666 / 9000)


@pytest.mark.parametrize(
    "method, expected",
    [
        ("finetune", ("finetune", None)),
        ("mixup", ("finetune", "mixup")),
        ("cutmix", ("finetune", "cutmix")),
        ("smile+cutmix", ("smile", "cutmix")),
        (" SMILE ", ("smile", "mixup")),
    ],
)
def test_method_parsing(method, expected):
    args = make(method=method)
    assert (args.regularizer, args.mixing) == expected


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"reg_lambda": -1.0}, "reg_lambda"),
        ({"aux_lambda": -0.1}, "aux_lambda"),
        ({"cls_lambda": -1e-4}, "cls_lambda"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"ema_decay": -0.1}, "ema_decay"),
        ({"ema_update_every": 0}, "ema_update_every"),
        ({"final_finetune_fraction": 1.0}, "final_finetune_fraction"),
        ({"method": "mixup", "mixup_alpha": 0.0}, "mixup_alpha"),
        ({"method": "smile", "mixup_alpha": -1.0}, "mixup_alpha"),
        ({"method": "cutmix", "cutmix_alpha": 0.0}, "cutmix_alpha"),
        ({"lr_step_fraction": 0.5}, "lr_scheduler_type"),
        ({"lr_step_fraction": 1.5, "lr_scheduler_type": "constant"}, "lr_step_fraction"),
    ],
)
def test_invalid_values_fail_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make(**kwargs)


def test_alpha_is_free_without_mixing():
    assert make(method="finetune", mixup_alpha=0.0).mixing is None


@pytest.mark.parametrize("method", ["smiles", "mixup+l2sp", "smile+mixup+cutmix", "finetune+dropout"])
def test_unknown_method_lists_known_ones(method):
    with pytest.raises(ValueError, match="Unknown `method`.*finetune.*mixup"):
        make(method=method)


def test_reference_recipe_fills_defaults_and_keeps_explicit_values():
    args = make(reference_recipe=True)
    assert args.optim == "sgd" and "nesterov=True" in args.optim_args and "momentum=0.9" in args.optim_args
    assert (args.learning_rate, args.weight_decay, args.max_grad_norm) == (0.01, 1e-4, 0.0)
    assert args.per_device_train_batch_size == 48
    assert args.lr_step_fraction == pytest.approx(REFERENCE_LR_STEP_FRACTION)
    explicit = make(reference_recipe=True, learning_rate=0.05, per_device_train_batch_size=16)
    assert (explicit.learning_rate, explicit.per_device_train_batch_size) == (0.05, 16)
    assert explicit.optim == "sgd"


def test_hf_defaults_are_kept_without_recipe():
    from transformers import TrainingArguments

    args, stock = make(), TrainingArguments(output_dir="unused", report_to="none")
    assert (args.optim, args.learning_rate, args.lr_scheduler_type) == (
        stock.optim, stock.learning_rate, stock.lr_scheduler_type
    )
    assert args.lr_step_fraction is None


def test_reference_recipe_never_replaces_a_passed_value_even_the_stock_default():
    args = make(reference_recipe=True, per_device_train_batch_size=8, learning_rate=5e-5, optim="adamw_torch")
    assert (args.per_device_train_batch_size, args.learning_rate, args.optim) == (8, 5e-5, "adamw_torch")
    assert args.optim_args is None  # SGD's momentum arguments only go with the recipe's optimizer
    assert args.reference_recipe_applied == {
        "weight_decay": 1e-4, "max_grad_norm": 0.0, "lr_scheduler_type": "constant",
        "lr_step_fraction": pytest.approx(REFERENCE_LR_STEP_FRACTION),
    }  # fmt: skip


@pytest.mark.parametrize("source", ["command line", "json"])
def test_reference_recipe_keeps_passed_values_from_the_command_line_and_files(source, tmp_path):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(SmileTrainingArguments)
    values = {"output_dir": str(tmp_path), "report_to": "none", "reference_recipe": True, "per_device_train_batch_size": 8}
    if source == "json":
        path = tmp_path / "args.json"
        path.write_text(json.dumps(values))
        (args,) = parser.parse_json_file(str(path))
    else:
        argv = [x for k, v in values.items() for x in (f"--{k}", str(v))]
        (args,) = parser.parse_args_into_dataclasses(argv)
    assert args.per_device_train_batch_size == 8  # passed, equal to the stock default, kept
    assert (args.learning_rate, args.optim, args.lr_step_fraction) == (0.01, "sgd", pytest.approx(6666 / 9000))


def test_defaults_that_differ_from_training_arguments_are_fields():
    from dataclasses import fields

    declared = {f.name: f for f in fields(SmileTrainingArguments)}
    args = make()
    assert (args.remove_unused_columns, args.label_names, args.ddp_find_unused_parameters) == (False, ["labels"], False)
    assert declared["remove_unused_columns"].default is False and declared["ddp_find_unused_parameters"].default is False
    assert make(remove_unused_columns=True, label_names=["y"]).label_names == ["y"]  # still the user's to change


def test_model_init_kwargs_accepts_json_from_the_command_line():
    assert make(model_init_kwargs='{"num_labels": 5, "revision": "v1"}').model_init_kwargs == {
        "num_labels": 5, "revision": "v1"
    }


def test_a_token_in_model_init_kwargs_is_never_written_out():
    args = make(model_init_kwargs={"token": "hf_secret", "revision": "v1"})
    assert "hf_secret" not in args.to_json_string() and json.loads(args.to_json_string())["model_init_kwargs"] == {
        "token": "<TOKEN>", "revision": "v1"
    }
    assert args.model_init_kwargs["token"] == "hf_secret"  # still used for loading
