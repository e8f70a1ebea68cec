#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Compare transfer methods over seeds: every method of `--compare_methods` (optionally plain fine-tuning from random
weights, `--scratch_baseline`) on every seed of `--seeds`, one `run_smile.py` run each, then one results table.

Takes every argument of `examples/run_smile.py`, whose functions do each run, plus the few below.

    # Offline demo (no argument, `make demo`): from scratch vs fine-tuning vs SMILE on few-shot digits, 3 seeds,
    # from the bundled Fashion-MNIST ResNet
    python examples/compare_methods.py

    # Your own folders, fine-tuning vs SMILE on 3 seeds
    python examples/compare_methods.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
        --model_name_or_path microsoft/resnet-50 --compare_methods finetune,smile --seeds 0,1,2 --output_dir runs/mine

Each run writes `results.json` in `<output_dir>/<label>-seed<seed>`; all of them, and the table (top-1 per seed, then
mean ± sample standard deviation of top-1, top-5 and ECE), go to `<output_dir>/results.json`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, replace

import torch
from transformers import HfArgumentParser

from smile_hf import SmileTrainingArguments

# isort: split
from run_smile import (  # examples/run_smile.py, next to this script
    DataTrainingArguments,
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
    "--eval_strategy", "no",
    "--save_strategy", "no",
    "--logging_steps", "50",
    "--report_to", "none",
    "--output_dir", "outputs/compare_methods_demo",
]  # fmt: skip
"""What `python examples/compare_methods.py` (no argument, e.g. `make demo`) runs: a few minutes on 2 CPU cores."""


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
    results = []
    for run in plan:
        result, _ = train_one(
            model_args, run.args, data_by_seed[run.args.seed], processor, label=run.label, from_scratch=run.from_scratch
        )
        results.append(result)
        if run.args.should_save:
            write_results([result], run.args.output_dir, experiment_args.results_file)
    if training_args.should_save:
        path = write_results(results, training_args.output_dir, experiment_args.results_file)
        print(f"\nResults ({first.description}, {len(first.eval)} eval images, model {model_args.model_name_or_path}):")
        print(results_table(results))
        print(f"Saved to {path}", flush=True)
    return results


def cli() -> None:
    run_cli(main, "compare_methods.py")


if __name__ == "__main__":
    cli()
