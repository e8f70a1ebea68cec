#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Compare transfer methods over seeds: every method of `--compare_methods` (optionally plain fine-tuning from random
weights, `--scratch_baseline`) on every seed of `--seeds`, one `run_smile.py` run each, then one results table.

Takes every argument of `examples/run_smile.py`, whose functions do each run, plus the few below.

    # Offline demo (no argument, `make demo`): from scratch vs fine-tuning vs SMILE on few-shot digits, 3 seeds,
    # from the bundled Fashion-MNIST ResNet; plots the loss terms and accuracy over steps
    python examples/compare_methods.py

    # Your own folders, fine-tuning vs SMILE on 3 seeds
    python examples/compare_methods.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
        --model_name_or_path microsoft/resnet-50 --compare_methods finetune,smile --seeds 0,1,2 --output_dir runs/mine

Each run writes `results.json` in `<output_dir>/<label>-seed<seed>`; all of them, and the table (top-1 per seed, then
mean ± sample standard deviation of top-1, top-5 and ECE), go to `<output_dir>/results.json`. With `--plot_curves
PATH`, every run's loss terms (`loss_main`, `loss_aux`, ...) and evaluation accuracy over the steps are drawn in the
PNG `PATH` (mean over seeds, min-max band) and written as JSON beside it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace

import torch
from transformers import HfArgumentParser

from smile_hf import SmileTrainingArguments
from smile_hf.curve_styles import label_styles
from smile_hf.checkpoints import write_run_config

# isort: split
from run_smile import (  # examples/run_smile.py, next to this script
    DataTrainingArguments,
    InputError,
    ModelArguments,
    check_model,
    configure_logging,
    finalize_args,
    given_options,
    load_processor,
    prepare_data,
    quiet,
    read_args,
    results_table,
    run_cli,
    run_config,
    run_processes_on_cpu_without_accelerator,
    train_one,
    write_results,
)

logger = logging.getLogger("compare_methods")

DEMO_ARGS = [
    "--dataset", "digits",
    "--train_samples_per_class", "10",
    "--random_horizontal_flip", "False",  # digits are not mirror-symmetric
    "--compare_methods", "finetune,smile",
    "--scratch_baseline", "True",  # plain fine-tuning from random weights: what the pre-training brings
    "--seeds", "0,1,2",
    "--torch_num_threads", "1",  # a 80k-parameter model: threads cost more than they give
    "--reference_recipe", "True",  # SGD Nesterov 0.9, lr 0.01, wd 1e-4, batch 48, lr x0.1 at 2/3
    "--max_steps", "500",
    "--per_device_eval_batch_size", "256",
    "--eval_strategy", "steps",  # accuracy over the steps, for the curves (the final evaluation is unchanged)
    "--eval_steps", "50",
    "--save_strategy", "no",
    "--logging_steps", "50",
    "--report_to", "none",
    "--output_dir", "outputs/compare_methods_demo",
    "--plot_curves", "benchmarks/results/demo_curves.png",  # and demo_curves.json: shown in the README
]  # fmt: skip
"""What `python examples/compare_methods.py` (no argument, e.g. `make demo`) runs: a few minutes on 2 CPU cores."""

CURVE_SERIES = {
    "loss_main": "loss_main: cross-entropy (SMILE's: of mixed images)",
    "loss_aux": "loss_aux: source head vs teacher (SMILE)",
    "loss_reg": "loss_reg: feature maps vs teacher (SMILE)",
    "loss_cls": "loss_cls: heads' weight penalty (SMILE)",
    "eval_accuracy": "eval accuracy (%)",
}
"""The panels of `--plot_curves` and their titles, in this order (the `loss_<term>` of other methods follow)."""


@dataclass
class ExperimentArguments:
    """Several runs in one call."""

    compare_methods: str | None = field(
        default=None,
        metadata={"help": "Comma-separated methods trained one after the other on every seed, e.g. finetune,smile."},
    )
    seeds: str | None = field(default=None, metadata={"help": "Comma-separated seeds (default: --seed)."})
    scratch_baseline: bool = field(
        default=False,
        metadata={
            "help": "Also fine-tune a randomly initialised model of the same architecture on every seed (shows what "
            "the pre-trained weights bring); reported as 'scratch'."
        },
    )
    results_file: str = field(default="results.json", metadata={"help": "Results file name in --output_dir."})
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch's intra-op pool (default: torch's choice). 1 is fastest for tiny models "
            "and on shared CPUs, where extra threads mostly wait for each other."
        },
    )
    plot_curves: str | None = field(
        default=None,
        metadata={
            "help": "Draw every run's loss terms and evaluation accuracy over the steps in this PNG (needs "
            "matplotlib), and write the curves as JSON beside it (same name, .json). The accuracy curve needs "
            "evaluations during training (--eval_strategy steps)."
        },
    )


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> HfArgumentParser:
    return HfArgumentParser((ModelArguments, DataTrainingArguments, SmileTrainingArguments, ExperimentArguments))


def parse_args(
    argv: list[str],
) -> tuple[ModelArguments, DataTrainingArguments, SmileTrainingArguments, ExperimentArguments]:
    """Parse the command line, or a single `.json` / `.yaml` file of arguments; no argument runs [`DEMO_ARGS`]."""
    model_args, data_args, training_args, experiment_args = read_args(build_parser(), argv or DEMO_ARGS)
    finalize_args(model_args, training_args, data_args, given_options(argv or DEMO_ARGS))
    return model_args, data_args, training_args, experiment_args


def parse_list(text: str | None, cast=str) -> list:
    return [cast(item.strip()) for item in text.split(",") if item.strip()] if text else []


# ---------------------------------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------------------------------


SCRATCH = "scratch"
"""Label of the plain fine-tuning runs from a randomly initialised model (`--scratch_baseline`)."""


@dataclass
class Run:
    """One training run: its label in the results, its arguments, and whether it starts from random weights."""

    label: str
    args: SmileTrainingArguments
    from_scratch: bool = False


def run_plan(training_args: SmileTrainingArguments, experiment_args: ExperimentArguments) -> list[Run]:
    """One [`Run`] per (method, seed), plus a from-scratch fine-tuning per seed with `--scratch_baseline`; each run
    has its own output folder when there are several."""
    methods = parse_list(experiment_args.compare_methods) or [training_args.method]
    seeds = parse_list(experiment_args.seeds, int) or [training_args.seed]
    labels = ([SCRATCH] if experiment_args.scratch_baseline else []) + methods
    single = len(labels) * len(seeds) == 1

    def make(label: str, seed: int) -> Run:
        method = "finetune" if label == SCRATCH else label
        output_dir = (
            training_args.output_dir if single else os.path.join(training_args.output_dir, f"{label}-seed{seed}")
        )
        return Run(label, replace(training_args, method=method, seed=seed, output_dir=output_dir), label == SCRATCH)

    return [make(label, seed) for seed in seeds for label in labels]


# ---------------------------------------------------------------------------------------------------------------------
# Curves (--plot_curves)
# ---------------------------------------------------------------------------------------------------------------------


def training_curves(log_history: list[dict]) -> dict[str, dict[str, list]]:
    """The curves of one run, read from its `Trainer.state.log_history`: every loss term of the training logs
    (`loss_<term>`, logged by [`SmileTrainer.log`]) and the accuracy of every evaluation (`eval_accuracy`).

    Returns:
        `dict[str, dict[str, list]]`: series name -> `{"steps": [...], "values": [...]}`, in step order; a step
        logged twice (the final evaluation repeats the last periodic one) keeps its last value.
    """
    points: dict[str, dict[int, float]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("loss_") or key == "eval_accuracy":
                points.setdefault(key, {})[int(entry["step"])] = float(value)
    return {
        key: {"steps": sorted(by_step), "values": [by_step[step] for step in sorted(by_step)]}
        for key, by_step in points.items()
    }


def curve_series(runs: list[dict]) -> list[str]:
    """The series found in `runs`, [`CURVE_SERIES`] first, then any other in name order."""
    found = {name for run in runs for name in run["curves"]}
    return [name for name in CURVE_SERIES if name in found] + sorted(found - set(CURVE_SERIES))


def mean_band(curves: list[dict[str, list]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps logged by every curve of `curves` (one per seed), and the mean, min and max of their values there."""
    steps = sorted(set.intersection(*(set(c["steps"]) for c in curves)))
    values = [[dict(zip(c["steps"], c["values"]))[step] for c in curves] for step in steps]
    return steps, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def import_pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend; an `ImportError` saying what to install without it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("Plotting the curves needs matplotlib: pip install matplotlib.") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_panel(ax, runs: list[dict], name: str) -> None:
    """One panel of [`plot_curves`]: series `name` of every run label (mean over seeds, min-max band)."""
    scale = 100.0 if name == "eval_accuracy" else 1.0
    styles = label_styles(list(dict.fromkeys(run["label"] for run in runs)))  # one colour per label
    for label in styles:
        curves = [run["curves"][name] for run in runs if run["label"] == label and name in run["curves"]]
        if not curves:
            continue
        steps, mean, low, high = mean_band(curves)
        line = ax.plot(steps, [scale * v for v in mean], label=label, **styles[label])[0]
        low, high = [scale * v for v in low], [scale * v for v in high]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    ax.set_title(CURVE_SERIES.get(name, name), fontsize=10)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(runs: list[dict], path: str, title: str = "") -> str:
    """Draw one panel per series of [`curve_series`] (accuracy in %): for each run label, the mean over its seeds
    and the band between their min and max. `runs`: `{"label", "seed", "curves"}` dicts ([`training_curves`]).
    Writes the PNG `path` and returns it."""
    plt = import_pyplot()
    series = curve_series(runs)
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, series):
        draw_panel(ax, runs, name)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_curves(runs: list[dict], path: str, title: str = "") -> tuple[str, str]:
    """Write the curves of `runs` as JSON (`path` with the extension `.json`: `{"title", "runs"}`), then plot them
    into the PNG `path` ([`plot_curves`]). Returns both paths."""
    json_path = os.path.splitext(path)[0] + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"title": title, "runs": runs}, f, indent=1)
    return json_path, plot_curves(runs, path, title)


def check_plotting(experiment_args: ExperimentArguments, training_args: SmileTrainingArguments) -> None:
    """Before any training: an [`InputError`] if `--plot_curves` cannot plot (no matplotlib), a warning if there
    will be no accuracy curve (no evaluation during training)."""
    if not experiment_args.plot_curves:
        return
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("--plot_curves needs matplotlib, which is not installed: pip install matplotlib.")
    if training_args.eval_strategy == "no":
        logger.warning("--plot_curves with --eval_strategy no: no accuracy curve (use --eval_strategy steps).")


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("No arguments: running the offline demo (from scratch vs fine-tuning vs SMILE, few-shot digits):\n  "
              "python examples/compare_methods.py " + " ".join(DEMO_ARGS), flush=True)  # fmt: skip
    run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args, experiment_args = parse_args(argv)
    configure_logging(training_args, "compare_methods")
    if experiment_args.torch_num_threads:
        torch.set_num_threads(experiment_args.torch_num_threads)
    check_model(model_args, data_args)
    check_plotting(experiment_args, training_args)
    processor = load_processor(model_args)
    plan = run_plan(training_args, experiment_args)
    seeds = list(dict.fromkeys(run.args.seed for run in plan))
    with training_args.main_process_first(desc="loading the datasets"):
        data_by_seed = {
            seed: prepare_data(data_args, model_args, seed, processor, disable_tqdm=quiet(training_args)) for seed in seeds
        }
    first = data_by_seed[seeds[0]]
    logger.info(
        f"Data: {first.description}: {len(first.train)} train / {len(first.eval)} eval examples; "
        f"world size {training_args.world_size}; {len(plan)} run(s)"
    )
    results, curves = [], []
    for run in plan:
        if run.args.should_save:  # what defines the run, beside it (read by examples/analyze_linearity.py)
            write_run_config(run.args.output_dir, run_config(model_args, data_args, run.args))
        result, trainer = train_one(
            model_args, run.args, data_by_seed[run.args.seed], processor, label=run.label, from_scratch=run.from_scratch
        )
        results.append(result)
        curves.append({"label": run.label, "seed": run.args.seed, "curves": training_curves(trainer.state.log_history)})
        if run.args.should_save:
            write_results([result], run.args.output_dir, experiment_args.results_file)
    if training_args.should_save:
        path = write_results(results, training_args.output_dir, experiment_args.results_file)
        description = f"{first.description}, {len(first.eval)} eval images, model {model_args.model_name_or_path}"
        print(f"\nResults ({description}):")
        print(results_table(results))
        if first.source is not None and not first.source.official_split:
            print(f"Evaluated on {first.source.eval_split_role or first.source.eval_split}: not the benchmark's official split.")
        print(f"Saved to {path}", flush=True)
        if experiment_args.plot_curves:
            json_path, png_path = write_curves(curves, experiment_args.plot_curves, title=description)
            print(f"Curves: {png_path} (data: {json_path})", flush=True)
    return results


def cli() -> None:
    run_cli(main, "compare_methods.py")


if __name__ == "__main__":
    cli()
