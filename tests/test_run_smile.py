"""`smile-hf train` and its driver (`smile_hf.run`): argument parsing (CLI, JSON, YAML; no argument is an
error pointing at the demo), the results table, each bad input (one clear error before training), a tiny end-to-end
run, and the `smile-hf train` console entry point."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertConfig

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf import run as run_smile
from smile_hf.data import DataError
from smile_hf.run import arguments as run_arguments

from .testing_utils import script_device_args, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
DRIVER = [sys.executable, "-m", "smile_hf.cli", "train"]  # `smile-hf train`


# ---- parsing ------------------------------------------------------------------------------------------------------

CLI = [
    "--dataset", "cub200", "--method", "l2sp+mixup", "--learning_rate", "0.1", "--train_samples_per_class", "5",
    "--image_column", "img", "--max_eval_samples", "7", "--corrupt_images", "skip",
]  # fmt: skip


def check_parsed(parsed, output_dir):
    model_args, data_args, training_args = parsed
    assert isinstance(training_args, SmileTrainingArguments)
    assert data_args.dataset == "cub200" and data_args.image_column == "img" and data_args.label_column is None
    assert data_args.train_samples_per_class == 5 and data_args.max_eval_samples == 7
    assert data_args.corrupt_images == "skip"
    assert (training_args.method, training_args.regularizer, training_args.mixing) == ("l2sp+mixup", "l2sp", "mixup")
    assert training_args.learning_rate == 0.1 and training_args.output_dir == output_dir
    # forced whatever the user passes: the transforms need the image column, the metrics the labels
    assert training_args.remove_unused_columns is False and training_args.label_names == ["labels"]
    assert model_args.model_name_or_path == run_smile.DEFAULT_MODEL == "microsoft/resnet-50"  # a Hub preset


def test_parse_command_line(tmp_path):
    check_parsed(run_smile.parse_args(CLI + ["--output_dir", str(tmp_path)]), str(tmp_path))


FILE_CONFIG = {
    "dataset": "cub200",
    "method": "l2sp+mixup",
    "learning_rate": 0.1,
    "train_samples_per_class": 5,
    "image_column": "img",
    "max_eval_samples": 7,
    "corrupt_images": "skip",
}  # fmt: skip (the same as CLI, typed as in a JSON / YAML file)


def test_parse_json_file(tmp_path):
    config = FILE_CONFIG | {"output_dir": str(tmp_path)}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    check_parsed(run_smile.parse_args([str(path)]), str(tmp_path))


def test_parse_yaml_file(tmp_path):
    import yaml

    config = FILE_CONFIG | {"output_dir": str(tmp_path)}
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(config))
    check_parsed(run_smile.parse_args([str(path)]), str(tmp_path))


def test_no_argument_is_an_error_that_points_at_the_demo():
    with pytest.raises(run_smile.InputError, match=r"no arguments: pass --dataset .* examples/compare_methods\.py"):
        run_smile.parse_args([])


def test_results_table():
    runs = [
        {
            "method": "finetune",
            "seed": 0,
            "metrics": {"eval_accuracy": 0.5, "eval_top5_accuracy": 0.9, "eval_ece": 0.1},
        },
        {"method": "smile", "seed": 0, "metrics": {"eval_accuracy": 0.6, "eval_top5_accuracy": 1.0, "eval_ece": 0.2}},
        {
            "method": "finetune",
            "seed": 1,
            "metrics": {"eval_accuracy": 0.7, "eval_top5_accuracy": 0.9, "eval_ece": 0.3},
        },
        {"method": "smile", "seed": 1, "metrics": {"eval_accuracy": 0.8, "eval_top5_accuracy": 1.0, "eval_ece": 0.2}},
    ]
    table = run_smile.results_table(runs).splitlines()
    assert table[0] == "| seed | finetune top-1 (%) | smile top-1 (%) |"
    assert table[2] == "| 0 | 50.00 | 60.00 |"
    assert table[3] == "| 1 | 70.00 | 80.00 |"
    # mean ± sample standard deviation: 60 ± 14.14 and 70 ± 14.14
    assert table[4] == "| mean top-1 | 60.00 ± 14.14 | 70.00 ± 14.14 |"
    assert table[6] == "| mean ECE | 20.00 ± 14.14 | 20.00 ± 0.00 |"


# ---- bad input: one clear error, before any training ------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(SmileTrainer, "train", fail)


def run_main(tmp_path, *argv):
    return run_smile.main(["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--report_to", "none", *argv])


def test_unknown_dataset(tmp_path, no_training):
    with pytest.raises(DataError, match="Unknown --dataset 'imagenet'. Known datasets: ag_news, banking77, cifar100, cub200, debian_sections, digits"):
        run_main(tmp_path, "--dataset", "imagenet")


def test_missing_columns_name_what_was_found(tmp_path, no_training):
    with pytest.raises(DataError, match=r"no column 'pixels'; found columns \['image', 'label'\]"):
        run_main(tmp_path, "--dataset", "digits", "--image_column", "pixels")


def test_labels_outside_the_model_range(tmp_path, no_training):
    with pytest.raises(DataError, match=r"label\(s\) outside the model's range 0\.\.4"):
        run_main(tmp_path, "--dataset", "digits", "--num_labels", "5")


def test_train_dir_missing_or_empty(tmp_path, no_training):
    bundled = ("--model_name_or_path", run_smile.resolve_bundled(run_smile.BUNDLED_CHECKPOINT))
    with pytest.raises(DataError, match="--train_dir '.*nowhere' does not exist"):
        run_main(tmp_path, "--train_dir", str(tmp_path / "nowhere"), *bundled)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--train_dir '.*empty' contains no image files"):
        run_main(tmp_path, "--train_dir", str(tmp_path / "empty"), *bundled)


def test_model_that_is_not_an_image_classifier(tmp_path, no_training):
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(run_smile.InputError, match=r"is a text classifier \('bert'\) and the data are images"):
        run_main(tmp_path, "--dataset", "digits", "--model_name_or_path", str(tmp_path / "bert"))


def run_offline(tmp_path, *argv):
    """`smile-hf train` in a subprocess, offline, with an empty Hugging Face cache (HF_HOME), from `tmp_path`."""
    env = subprocess_env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    return subprocess.run(
        [*DRIVER, *argv], env=env, cwd=tmp_path, capture_output=True, text=True, check=False,
        timeout=120,
    )  # fmt: skip


def test_unreachable_model_is_one_line_on_stderr(tmp_path):
    argv = ["--dataset", "digits", "--model_name_or_path", "no-such-org/no-such-model", "--output_dir", str(tmp_path)]
    result = run_offline(tmp_path, *argv)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "smile-hf train: error: offline (HF_HUB_OFFLINE=1) and not in the local cache: download the model "
        "no-such-org/no-such-model (`hf download no-such-org/no-such-model`) once online, or pass a local "
        "--model_name_or_path folder."
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_headline_command_offline_names_what_to_download(tmp_path):
    """`smile-hf train --dataset food101` (the headline command) with nothing cached: one line naming the default model and the dataset."""
    result = run_offline(tmp_path, "--dataset", "food101")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        "smile-hf train: error: offline (HF_HUB_OFFLINE=1) and not in the local cache: download the model "
        "microsoft/resnet-50 (`hf download microsoft/resnet-50`) and the dataset ethz/food101 "
        "(`hf download --repo-type dataset ethz/food101`) once online, or pass a local --model_name_or_path folder."
    ], result.stderr
    assert "Model: microsoft/resnet-50 (the default" in result.stderr  # logged
    assert not (tmp_path / "runs").exists()  # nothing written before the check


# ---- defaults that depend on other arguments ----------------------------------------------------------------------


def test_default_model_and_output_dir():
    for argv, model, output_dir in (
        (["--dataset", "food101"], "microsoft/resnet-50", "runs/food101-smile-resnet-50"),
        (["--dataset", "cub200", "--method", "finetune"], "microsoft/resnet-50", "runs/cub200-finetune-resnet-50"),
        (["--train_dir", "data/my_birds/train/"], "microsoft/resnet-50", "runs/train-smile-resnet-50"),
        (["--dataset", "digits"], run_smile.resolve_bundled(run_smile.BUNDLED_CHECKPOINT),
         "runs/digits-smile-fmnist-resnet-tiny"),
        (["--dataset", "food101", "--model_name_or_path", "google/vit-base-patch16-224"],
         "google/vit-base-patch16-224", "runs/food101-smile-vit-base-patch16-224"),
    ):  # fmt: skip
        model_args, _, training_args = run_smile.parse_args(argv)
        assert (model_args.model_name_or_path, training_args.output_dir) == (model, output_dir), argv
    # explicit values win, including the transformers default's own name, on the command line and in files
    _, _, training_args = run_smile.parse_args(["--dataset", "food101", "--output_dir", "trainer_output"])
    assert training_args.output_dir == "trainer_output"
    _, _, training_args = run_smile.parse_args(["--dataset", "food101", "--output_dir=elsewhere"])
    assert training_args.output_dir == "elsewhere"
    assert "microsoft/resnet-50 (the paper's backbone)" in " ".join(run_smile.build_parser().format_help().split())


def test_report_to_tensorboard_only_when_installed(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, installed):  # tensorboard installed or not, whatever this machine has
        if name == "tensorboard":
            return object() if installed else None
        return real_find_spec(name)

    for installed in (False, True):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, installed=installed: find_spec(name, installed))
        _, _, training_args = run_smile.parse_args(["--dataset", "food101"])
        assert training_args.report_to == (["tensorboard"] if installed else [])
        _, _, training_args = run_smile.parse_args(["--dataset", "food101", "--report_to", "none"])
        assert training_args.report_to == []


def test_dataloader_workers_follow_the_cpus_with_an_accelerator(monkeypatch):
    monkeypatch.setattr(run_arguments, "has_accelerator", lambda: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    _, _, args = run_smile.parse_args(["--dataset", "food101"])
    run_smile.set_dataloader_defaults(args, set(), cpu_count=16)
    assert (args.dataloader_num_workers, args.dataloader_persistent_workers, args.dataloader_pin_memory) == (
        7, True, True,
    )  # fmt: skip (16 cores / 2 processes, one left to the main process)
    _, _, args = run_smile.parse_args(["--dataset", "food101", "--dataloader_num_workers", "3"])
    run_smile.set_dataloader_defaults(args, {"dataloader_num_workers"}, cpu_count=16)
    assert args.dataloader_num_workers == 3
    monkeypatch.setattr(run_arguments, "has_accelerator", lambda: False)
    _, _, args = run_smile.parse_args(["--dataset", "food101"])
    assert (args.dataloader_num_workers, args.dataloader_pin_memory) == (0, False)  # the CPU trains


def test_a_run_with_the_accelerator_data_loading_defaults_trains_several_epochs(tmp_path, monkeypatch):
    """What the run script does on a GPU machine, on the CPU: persistent workers (one per core less one, here 2) over
    three epochs (pinned memory is asked for too; torch's DataLoader drops it without an accelerator)."""
    monkeypatch.setattr(run_arguments, "has_accelerator", lambda: True)
    monkeypatch.setattr(run_arguments, "available_cpu_count", lambda: 3)
    loaders, get_train_dataloader = [], SmileTrainer.get_train_dataloader

    def recording(self):
        loaders.append(get_train_dataloader(self))
        return loaders[-1]

    monkeypatch.setattr(SmileTrainer, "get_train_dataloader", recording)
    result = run_smile.main([
        "--dataset", "digits", "--train_samples_per_class", "1", "--max_eval_samples", "10", "--num_train_epochs", "3",
        "--max_steps", "-1", "--per_device_train_batch_size", "5", "--report_to", "none", "--disable_tqdm", "True",
        "--output_dir", str(tmp_path), *script_device_args(),
    ])  # fmt: skip
    assert [(loader.num_workers, loader.persistent_workers) for loader in loaders] == [(2, True)]
    assert result["global_step"] == 6 and result["metrics"]["epoch"] == 3.0  # 10 images, batches of 5


# ---- a tiny end-to-end run ----------------------------------------------------------------------------------------


def test_tiny_run(tmp_path, capsys):
    result = run_smile.main([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "40", "--method", "smile",
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64",
        "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", "--output_dir", str(tmp_path),
        *script_device_args(),
    ])  # fmt: skip
    assert (result["label"], result["method"], result["seed"], result["num_train"], result["num_eval"]) == (
        "smile", "smile", 42, 30, 40,
    )  # fmt: skip
    assert result["global_step"] == 3 and not result["from_scratch"]
    metrics = result["metrics"]
    assert metrics["eval_num_samples"] == 40
    assert 0.0 <= metrics["eval_accuracy"] <= metrics["eval_top5_accuracy"] <= 1.0 and 0.0 <= metrics["eval_ece"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in saved["runs"]] == ["smile"] and saved["table"].startswith("| seed | smile top-1 (%) |")
    assert "| seed | smile top-1 (%) |" in capsys.readouterr().out


# ---- the console entry point: `smile-hf train ...` is the same driver -------------------------------------------------


def test_console_entry_point_trains_like_the_script(tmp_path):
    """`smile-hf train ARGS` (here through `smile_hf.cli.main`) runs the run driver: the same results
    file, from the same arguments, as `run_smile.main(ARGS)` (a 2-step run, seeded: the same accuracy)."""
    from smile_hf import cli

    argv = [
        "--dataset", "digits", "--train_samples_per_class", "2", "--max_eval_samples", "20", "--method", "finetune",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--save_strategy", "no", "--report_to", "none",
        "--disable_tqdm", "True", *script_device_args(),
    ]  # fmt: skip
    script = run_smile.main([*argv, "--output_dir", str(tmp_path / "script")])
    cli.main(["train", *argv, "--output_dir", str(tmp_path / "cli")])
    saved = json.loads((tmp_path / "cli" / "results.json").read_text())["runs"]
    assert [r["label"] for r in saved] == ["finetune"] and saved[0]["global_step"] == 2
    assert saved[0]["metrics"]["eval_accuracy"] == script["metrics"]["eval_accuracy"]


def test_console_entry_point_errors_and_usage(tmp_path):
    env = subprocess_env(HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "smile_hf.cli"]
    bad = subprocess.run([*command, "train", "--dataset", "digits", "--method", "smiles"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if "error" in line.lower()][0].startswith(
        "smile-hf train: error: Unknown `method` 'smiles'."
    )
    usage = subprocess.run([*command, "fly"], env=env, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: smile-hf {train,compare,export}")
    help_text = subprocess.run([*command, "train", "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: smile-hf train")
