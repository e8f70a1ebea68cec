"""examples/compare_methods.py and its driver (`smile_hf.run.compare`): its arguments on top of run_smile.py's (CLI, JSON, YAML, the no-argument demo), the
run plan, a tiny end-to-end comparison, and the curves of `--plot_curves` (read from a log history, JSON and PNG)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from smile_hf.data import DATASET_PRESETS
from smile_hf.run import compare as compare_methods

from .test_run_smile import CLI, FILE_CONFIG, check_parsed

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMILE_TERMS = ("loss_main", "loss_aux", "loss_reg", "loss_cls")


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
    assert compare_methods.curves_path(experiment_args.plot_curves, training_args.output_dir) == os.path.join(
        "outputs", "compare_methods_demo", "curves.png"
    )  # in its git-ignored output folder: the committed benchmarks/results/demo_curves.* are `make demo-figure`'s
    assert (training_args.eval_strategy, training_args.eval_steps) == ("steps", 50)  # accuracy over the steps


@pytest.mark.parametrize("argv, expected", [
    (["--plot_curves"], "OUT/curves.png"),
    (["--plot_curves", "--seeds", "1"], "OUT/curves.png"),  # a switch: the next option is no value of it
    (["--plot_curves", "figures/c.png"], "figures/c.png"),
    ([], None),
])  # fmt: skip
def test_plot_curves_is_a_switch_or_takes_a_path(tmp_path, argv, expected):
    out = str(tmp_path / "out")
    *_, training_args, experiment_args = compare_methods.parse_args(["--output_dir", out, *argv])
    path = compare_methods.curves_path(experiment_args.plot_curves, training_args.output_dir)
    assert path == (expected.replace("OUT", out) if expected else None)
    assert compare_methods.curves_path(True, out) == os.path.join(out, "curves.png")  # `plot_curves: true` in a file


def test_the_demo_writes_nothing_outside_its_git_ignored_output_folder(tmp_path, monkeypatch, restore_threads):
    """The demo's own arguments, shortened (2 steps, one method, one seed), run from an empty folder: every file it
    writes, the curves included, is under its `--output_dir`, which the repository's .gitignore ignores."""
    monkeypatch.chdir(tmp_path)
    compare_methods.main([*compare_methods.DEMO_ARGS, "--compare_methods", "finetune", "--scratch_baseline", "False",
                          "--seeds", "0", "--max_steps", "2", "--eval_steps", "1", "--logging_steps", "1",
                          "--train_samples_per_class", "3", "--max_eval_samples", "20", "--disable_tqdm", "True"])  # fmt: skip
    written = sorted(os.path.relpath(os.path.join(root, f), tmp_path) for root, _, files in os.walk(tmp_path) for f in files)
    demo_dir = os.path.join("outputs", "compare_methods_demo")
    assert written and all(path.startswith(demo_dir + os.sep) for path in written), written
    assert {os.path.join(demo_dir, name) for name in ("curves.png", "curves.json", "results.json")} <= set(written)
    gitignore = open(os.path.join(os.path.dirname(__file__), os.pardir, ".gitignore")).read().split()
    assert "outputs/" in gitignore


def test_the_demo_pins_the_cpu_kernels_and_keeps_what_the_environment_sets(monkeypatch, caplog):
    for name in compare_methods.DEMO_KERNELS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")  # set by the user: kept
    with caplog.at_level("WARNING", logger="smile_hf"):
        compare_methods.pin_demo_kernels()
    assert (os.environ["ATEN_CPU_CAPABILITY"], os.environ["ONEDNN_MAX_CPU_ISA"], os.environ["MKL_CBWR"]) == (
        "default", "SSE41", "AVX2"
    )
    # this test process ran torch kernels before: they cannot be pinned any more, which is said
    chosen = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
    assert ("torch chose its CPU kernels before the demo could pin them" in caplog.text) == chosen


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


@pytest.mark.auto_device("runs examples/compare_methods.py as a user would: it trains on an accelerator when there is one")
def test_tiny_comparison_run(tmp_path, capsys, monkeypatch, restore_threads):
    # as if the digits' split were not the official one: the printed results say so
    digits = dataclasses.replace(DATASET_PRESETS["digits"], official_split=False, eval_split_role="a made-up split")
    monkeypatch.setitem(DATASET_PRESETS, "digits", digits)
    runs = compare_methods.main([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "40",
        "--compare_methods", "finetune,smile", "--scratch_baseline", "True", "--seeds", "0", "--max_steps", "3", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "64", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True",
        "--torch_num_threads", "1", "--output_dir", str(tmp_path), "--logging_steps", "1", "--eval_strategy", "steps",
        "--eval_steps", "2", "--plot_curves", str(tmp_path / "plots" / "curves.png"),
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
    printed = capsys.readouterr().out
    assert "| seed | scratch top-1 (%) | finetune top-1 (%) | smile top-1 (%) |" in printed
    assert "Evaluated on a made-up split: not the benchmark's official split." in printed
    # the curves of the real trainers: every term SMILE logs, FT's only term, accuracy at steps 2 and 3 (the end)
    curves = {
        run["label"]: run["curves"] for run in json.loads((tmp_path / "plots" / "curves.json").read_text())["runs"]
    }
    assert set(curves["smile"]) == {"loss_main", "loss_aux", "loss_reg", "loss_cls", "eval_accuracy"}
    assert set(curves["finetune"]) == set(curves["scratch"]) == {"loss_main", "eval_accuracy"}
    for run in runs:
        accuracy = curves[run["label"]]["eval_accuracy"]
        assert curves[run["label"]]["loss_main"]["steps"] == [1, 2, 3] and accuracy["steps"] == [2, 3]
        assert accuracy["values"][-1] == run["metrics"]["eval_accuracy"]  # the last point is the final evaluation
    assert (tmp_path / "plots" / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


# ---- curves (--plot_curves) ------------------------------------------------------------------------------------------

def synthetic_history(terms: tuple[str, ...], seed: int, steps: int = 6, eval_every: int = 3) -> list[dict]:
    """A `Trainer.state.log_history` as SmileTrainer writes it: a training log per step with each term (value
    `seed + step + 0.1 * term index`), an evaluation every `eval_every` steps (accuracy `step / 10`), then the
    training summary and the final evaluation, which repeats the last periodic one."""
    history = []
    for step in range(1, steps + 1):
        history.append(
            {"loss": 1.0, "grad_norm": 0.5, "step": step} | {t: seed + step + 0.1 * i for i, t in enumerate(terms)}
        )
        if step % eval_every == 0:
            history.append({"eval_loss": 2.0, "eval_accuracy": step / 10, "eval_ece": 0.1, "step": step})
    history.append({"train_loss": 1.0, "train_runtime": 3.0, "step": steps})
    return history + [{"eval_loss": 2.0, "eval_accuracy": steps / 10, "step": steps}]


def test_training_curves_are_every_logged_term_and_the_accuracy():
    curves = compare_methods.training_curves(synthetic_history(SMILE_TERMS, seed=7))
    assert set(curves) == {*SMILE_TERMS, "eval_accuracy"}  # not eval_loss, train_loss, grad_norm
    for i, term in enumerate(SMILE_TERMS):
        assert curves[term] == {"steps": [1, 2, 3, 4, 5, 6], "values": [7 + s + 0.1 * i for s in range(1, 7)]}
    assert curves["eval_accuracy"] == {"steps": [3, 6], "values": [0.3, 0.6]}  # step 6 once


def test_mean_band_over_seeds_on_the_common_steps():
    curves = [{"steps": [1, 2, 3], "values": [1.0, 2.0, 6.0]}, {"steps": [2, 3, 4], "values": [4.0, 0.0, 9.0]}]
    assert compare_methods.mean_band(curves) == ([2, 3], [3.0, 3.0], [2.0, 0.0], [4.0, 6.0])


def test_write_curves_writes_every_series_as_json_and_png(tmp_path, monkeypatch):
    runs = [
        {"label": label, "seed": seed, "curves": compare_methods.training_curves(synthetic_history(terms, seed))}
        for seed in (0, 1) for label, terms in (("finetune", ("loss_main",)), ("smile", SMILE_TERMS))
    ]  # fmt: skip
    drawn = []
    draw_panel = compare_methods.draw_panel
    monkeypatch.setattr(
        compare_methods, "draw_panel", lambda ax, runs, name: drawn.append(name) or draw_panel(ax, runs, name)
    )
    json_path, png_path = compare_methods.write_curves(runs, str(tmp_path / "out" / "curves.png"), title="synthetic")
    assert json_path == str(tmp_path / "out" / "curves.json")
    assert json.loads((tmp_path / "out" / "curves.json").read_text()) == {"title": "synthetic", "runs": runs}
    assert drawn == [*SMILE_TERMS, "eval_accuracy"]  # one panel per series, none missing
    from PIL import Image

    with Image.open(png_path) as image:
        assert image.format == "PNG" and image.size == (1500, 720)  # 3 x 2 panels of 5 x 3.6 inches at 100 dpi


def test_plot_curves_without_matplotlib_is_one_input_error_before_training(monkeypatch):
    import importlib.util

    _, _, training_args, experiment_args = compare_methods.parse_args([])
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a)
    )
    with pytest.raises(compare_methods.InputError, match="--plot_curves needs matplotlib"):
        compare_methods.check_plotting(experiment_args, training_args)
