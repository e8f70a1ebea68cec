"""One recipe mechanism: [`Recipe`] and [`apply_recipe`] with one rule (an option the user gave wins), used by
`reference_recipe` and by the presets; and what runs define and record, against what the run driver of the 0.1.0
release defined and recorded for the same command lines (`fixtures/recorded_run_arguments.json`, written by that code):
the values, `results.json`'s recipe entry, `reference_recipe_applied` and `run_config.json`, which decides whether a run
folder resumes. A run folder whose `run_config.json` that code wrote resumes."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from smile_hf import SmileTrainingArguments
from smile_hf import run as run_smile
from smile_hf.data import DATASET_PRESETS
from smile_hf.recipes import REFERENCE_RECIPE, Recipe, apply_recipe

from .testing_utils import script_device_args

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "recorded_run_arguments.json").read_text())
MODEL = run_smile.resolve_bundled(run_smile.BUNDLED_CHECKPOINT)
RECORDED_ARGS = (
    "optim", "optim_args", "learning_rate", "weight_decay", "max_grad_norm", "lr_scheduler_type",
    "per_device_train_batch_size", "lr_step_fraction", "max_steps", "num_train_epochs", "reference_recipe",
    "reference_recipe_applied",
)  # fmt: skip


@dataclass
class Toy:
    optim: str = "adamw"
    optim_args: str | None = None
    max_steps: int = -1
    num_train_epochs: float = 3.0
    lr_step_fraction: float | None = None
    lr_scheduler_type: str = "linear"
    reference_recipe: bool = False
    extra: int = 0


TOY = Recipe(
    "toy", "a recipe of the test",
    {"optim": "sgd", "optim_args": "momentum=0.9", "max_steps": 10, "lr_step_fraction": 0.5, "reference_recipe": True},
    reference_values={"extra": 7}, requires={"optim_args": "optim"},
)  # fmt: skip


def test_a_given_option_wins_and_what_goes_with_it_yields():
    toy = Toy()
    assert apply_recipe(TOY, set(), toy) == {**TOY.values, "extra": 7} and toy.max_steps == 10 and toy.extra == 7
    toy = Toy(optim="adamw", num_train_epochs=2, lr_scheduler_type="cosine")
    applied = apply_recipe(TOY, {"optim", "num_train_epochs", "lr_scheduler_type"}, toy)
    # the given options are kept; the steps yield to the epochs, the lr step to the schedule, SGD's arguments to the
    # optimizer that is not SGD
    assert applied == {"reference_recipe": True, "extra": 7}
    assert (toy.optim, toy.optim_args, toy.max_steps, toy.lr_step_fraction) == ("adamw", None, -1, None)
    toy = Toy(optim="sgd")
    assert apply_recipe(TOY, {"optim"}, toy)["optim_args"] == "momentum=0.9"  # the given optimizer is the recipe's
    toy = Toy(reference_recipe=False)
    assert "extra" not in apply_recipe(TOY, {"reference_recipe"}, toy) and toy.extra == 0  # reference values: off


def test_a_recipe_naming_no_argument_is_refused():
    with pytest.raises(ValueError, match=r"Recipe 'bad' names \['nope'\]"):
        apply_recipe(Recipe("bad", "", {"nope": 1}), set(), Toy())


def test_recipes_are_named_and_reference_recipe_is_one_of_them():
    assert REFERENCE_RECIPE.name == "reference"
    names = {preset.recipe.name for preset in DATASET_PRESETS.values()}
    assert {"demo", "paper-cub200", "paper-food101", "paper-untuned"} <= names
    # a preset recipe turns the reference recipe on: its values are those of REFERENCE_RECIPE
    _, data_args, args = run_smile.parse_args(["--dataset", "digits", "--output_dir", "unused", "--report_to", "none"])
    assert data_args.recipe.recipe == "demo" and args.reference_recipe_applied == pytest.approx(REFERENCE_RECIPE.values)


@pytest.mark.parametrize("case", RECORDED["command_lines"], ids=lambda case: " ".join(case["argv"]))
def test_command_lines_define_and_record_what_the_released_driver_did(case):
    argv = ["--output_dir", "unused", "--report_to", "none", *[MODEL if a == "MODEL" else a for a in case["argv"]]]
    model_args, data_args, args = run_smile.parse_args(argv)
    config = run_smile.run_config(model_args, data_args, args)
    assert json.loads(json.dumps(config).replace(json.dumps(MODEL)[1:-1], "<MODEL>")) == case["run_config"]
    recipe = data_args.recipe.to_dict() if data_args.recipe is not None else None
    if recipe is not None:
        assert recipe.pop("recipe") == data_args.recipe.recipe  # the recipe's name: recorded in addition
    assert recipe == case["recipe"]
    saved = json.loads(args.to_json_string())
    assert {name: saved[name] for name in RECORDED_ARGS} == case["training_args"]


@pytest.mark.parametrize("case", RECORDED["python"], ids=lambda case: json.dumps(case["kwargs"]))
def test_python_arguments_resolve_as_the_released_ones(case):
    args = SmileTrainingArguments(output_dir="unused", report_to="none", **case["kwargs"])
    saved = json.loads(args.to_json_string())
    assert {name: saved[name] for name in RECORDED_ARGS} == case["training_args"]


def test_a_run_folder_of_the_released_driver_resumes(tmp_path, caplog):
    """A checkpoint beside the `run_config.json` the released driver wrote for the same command line: the run resumes
    from it, and records its recipe as that driver did."""
    old = RECORDED["old_run_folder"]
    output_dir = tmp_path / "run"
    argv = [*old["argv"], "--output_dir", str(output_dir), *script_device_args()]
    run_smile.main(argv)  # a checkpoint per step
    (output_dir / "results.json").unlink()  # an unfinished run, stopped after its first step
    shutil.rmtree(output_dir / "checkpoint-2")
    (output_dir / "run_config.json").write_text(json.dumps(old["run_config"]).replace("<MODEL>", MODEL))
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        result = run_smile.main(argv)
    assert f"Resuming from {output_dir / 'checkpoint-1'}" in caplog.text and result["global_step"] == 2
    recorded = json.loads((output_dir / "results.json").read_text())["runs"][0]["recipe"]
    assert recorded.pop("recipe") == "demo" and recorded == old["recipe"]


def test_fields_newer_than_old_run_folders_are_recorded_only_when_set():
    """`run_config.json` leaves the newer fields out at their default (old folders keep resuming) and records them,
    so that a rerun with another value does not resume, when they are set."""
    argv = ["--output_dir", "unused", "--report_to", "none", "--dataset", "digits"]
    plain = run_smile.run_config(*run_smile.parse_args(argv))
    assert "teacher_fold_batchnorm" not in plain["training"] and "unlabeled_from_train" not in plain["data"]
    config = run_smile.run_config(*run_smile.parse_args([*argv, "--teacher_fold_batchnorm", "True"]))
    assert config["training"]["teacher_fold_batchnorm"] is True
    assert {k: v for k, v in config["training"].items() if k != "teacher_fold_batchnorm"} == plain["training"]
