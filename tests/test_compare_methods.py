"""examples/compare_methods.py: its arguments on top of run_smile.py's (CLI, JSON, YAML, the no-argument demo), the
run plan, and a tiny end-to-end comparison."""

from __future__ import annotations

import json
import os

import pytest
import torch

from .example_scripts import load_example
from .test_run_smile import CLI, FILE_CONFIG, check_parsed

compare_methods = load_example("compare_methods")


# ---- parsing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["command line", "json", "yaml"])
def test_parse_run_smile_arguments_and_seeds(tmp_path, source):
    import yaml

    config = FILE_CONFIG | {"seeds": "1,2", "output_dir": str(tmp_path)}
    if source == "command line":
        argv = CLI + ["--seeds", "1,2", "--output_dir", str(tmp_path)]
    else:
        path = tmp_path / f"args.{source}"
        path.write_text(json.dumps(config) if source == "json" else yaml.safe_dump(config))
        argv = [str(path)]
    *parsed, experiment_args = compare_methods.parse_args(argv)
    check_parsed(parsed, str(tmp_path))
    assert experiment_args.seeds == "1,2"


def test_no_argument_is_the_offline_demo():
    model_args, data_args, training_args, experiment_args = compare_methods.parse_args([])
    assert data_args.dataset == "digits" and data_args.train_samples_per_class == 10
    assert experiment_args.compare_methods == "finetune,smile" and experiment_args.scratch_baseline
    assert training_args.reference_recipe and training_args.optim == "sgd"
    assert model_args.model_name_or_path.endswith("checkpoints/fmnist-resnet-tiny")


def test_run_plan_is_every_method_on_every_seed(tmp_path):
    _, _, training_args, experiment_args = compare_methods.parse_args(
        [
            "--output_dir",
            str(tmp_path),
            "--compare_methods",
            "finetune,smile",
            "--seeds",
            "3,4",
            "--scratch_baseline",
            "True",
        ]
    )
    plan = compare_methods.run_plan(training_args, experiment_args)
    assert [(r.label, r.args.method, r.args.seed, r.from_scratch) for r in plan] == [
        ("scratch", "finetune", 3, True), ("finetune", "finetune", 3, False), ("smile", "smile", 3, False),
        ("scratch", "finetune", 4, True), ("finetune", "finetune", 4, False), ("smile", "smile", 4, False),
    ]  # fmt: skip
    assert plan[2].args.output_dir == os.path.join(str(tmp_path), "smile-seed3")
    assert plan[2].args.regularizer == "smile" and plan[1].args.regularizer == "finetune"
    single = compare_methods.run_plan(training_args, compare_methods.ExperimentArguments())
    assert [(r.label, r.args.seed, r.args.output_dir) for r in single] == [("smile", 42, str(tmp_path))]


# ---- a tiny end-to-end comparison -----------------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_tiny_comparison_run(tmp_path, capsys, restore_threads):
    runs = compare_methods.main([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "40",
        "--compare_methods", "finetune,smile", "--scratch_baseline", "True", "--seeds", "0", "--max_steps", "3", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "64", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True",
        "--torch_num_threads", "1", "--output_dir", str(tmp_path),
    ])  # fmt: skip
    assert [(r["label"], r["method"], r["seed"], r["num_train"], r["num_eval"], r["global_step"]) for r in runs] == [
        ("scratch", "finetune", 0, 30, 40, 3), ("finetune", "finetune", 0, 30, 40, 3), ("smile", "smile", 0, 30, 40, 3),
    ]  # fmt: skip
    for run in runs:
        metrics = run["metrics"]
        assert metrics["eval_num_samples"] == 40
        assert (
            0.0 <= metrics["eval_accuracy"] <= metrics["eval_top5_accuracy"] <= 1.0
            and 0.0 <= metrics["eval_ece"] <= 1.0
        )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["scratch", "finetune", "smile"]
    assert (tmp_path / "smile-seed0" / "results.json").is_file()
    assert "| seed | scratch top-1 (%) | finetune top-1 (%) | smile top-1 (%) |" in capsys.readouterr().out
