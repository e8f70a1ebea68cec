# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Several runs in one call: every method of `--compare_methods` (and plain fine-tuning from random weights,
`--scratch_baseline`) on every seed of `--seeds`, each a run of [`smile_hf.run.driver`], then one results table."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field, replace

import torch
from transformers import HfArgumentParser

from .._compat import shut_down_dataloader_workers
from ..checkpoints import resume_point, write_run_config
from ..config import SmileTrainingArguments
from ..data import PreparedData
from .arguments import (
    DataTrainingArguments,
    InputError,
    ModelArguments,
    apply_defaults,
    given_options,
    quiet,
    read_args,
    run_processes_on_cpu_without_accelerator,
)
from .compare_extras import (
    analyze_runs,
    check_analysis,
    eval_predictions,
    remove_comparison_figures,
    write_reliability,
)
from .curves import training_curves, write_curves
from .driver import configure_logging, run_config, train_one
from .folders import CURVES_KEY, check_comparison_dir
from .help import argument_groups, group_help
from .hp_search import check_not_finished, check_search, needs_validation, search
from .loading import check_model, load_processor, prepare_data
from .outputs import results_table, write_results
from .predict import evaluate_and_predict
from .tuning_arguments import TuningArguments

logger = logging.getLogger(__name__)

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
    "--overwrite_output_dir", "True",  # the demo starts afresh every time
    "--plot_curves", "benchmarks/results/demo_curves.png",  # and demo_curves.json: shown in the README
]  # fmt: skip
"""What `python examples/compare_methods.py` (no argument, e.g. `make demo`) runs: a few minutes on 2 CPU cores."""

@dataclass
class ExperimentArguments:
    """Several runs in one call."""

    compare_methods: str | None = field(
        default=None,
        metadata={"help": "Comma-separated methods trained one after the other on every seed, e.g. finetune,smile "
            "(default: --method alone)."},
    )
    seeds: str | None = field(default=None, metadata={"help": "Comma-separated seeds (default: --seed)."})
    scratch_baseline: bool = field(
        default=False,
        metadata={
            "help": "Also fine-tune a randomly initialised model of the same architecture on every seed (shows what "
            "the pre-trained weights bring); reported as 'scratch'."
        },
    )
    analyze: bool = field(
        default=False,
        metadata={
            "help": "After all runs, measure how linear each saved model is in-between samples (smile_hf.analysis, "
            "as examples/analyze_linearity.py): linearity.{json,md,png} in each run's folder, the table and plot "
            "of every run in <output_dir>/linearity.{md,json,png}. Needs saved models (not --save_strategy no)."
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


COMPARE_DESCRIPTION = """\
Compare transfer methods over seeds: every method of --compare_methods (and, with --scratch_baseline, plain
fine-tuning from random weights) on every seed of --seeds, each one run of run_smile.py in <output_dir>/<label>-seed
<seed>, then one table of all of them in <output_dir>/results.json. It takes every option of run_smile.py.

Run with no arguments, it is the offline demo (make demo): from scratch vs fine-tuning vs SMILE on few-shot digits
from the bundled Fashion-MNIST ResNet, 3 seeds, a few minutes on 2 CPU cores, with the curves of the README.

example:
  python examples/compare_methods.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
      --compare_methods finetune,smile --seeds 0,1,2 --output_dir runs/mine"""


COMPARE_HELP = {
    "do_train": "Train every run (default: True; --do_train False --do_eval evaluates the runs saved in --output_dir).",
    "do_eval": "With --do_train False: evaluate the model saved in every run folder of --output_dir, into "
    "<output_dir>/eval_results.json (a training run always evaluates). (default: False)",
    "do_predict": "Not for comparisons: classify images with one run's model, run_smile.py --do_predict. "
    "(default: False)",
    "output_dir": "The comparison's folder: each run in <output_dir>/<label>-seed<seed>, all of them and the table in "
    "<output_dir>/results.json (default: runs/<dataset>-<method>-<model>; the demo: outputs/compare_methods_demo).",
    "resume_from_checkpoint": "'last': resume every run from its own newest complete checkpoint (runs that never "
    "began start). Without it, each run resumes when its saved arguments match; other runs are refused.",
}
"""The help of the options whose meaning a comparison sets."""


def build_parser(prog: str | None = None) -> HfArgumentParser:
    """The parser of a comparison: the arguments of one run, and [`ExperimentArguments`], with a grouped `--help`."""
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, SmileTrainingArguments, ExperimentArguments), prog=prog,
        description=COMPARE_DESCRIPTION, usage="%(prog)s [OPTION ...]   (no option: the offline demo)\n"
        "       %(prog)s ARGS.json | ARGS.yaml",
    )  # fmt: skip
    groups = {"model": ModelArguments, "data": DataTrainingArguments, "tuning": TuningArguments,
              "comparison": ExperimentArguments}  # fmt: skip
    return group_help(parser, argument_groups(groups), COMPARE_HELP)


def parse_args(
    argv: list[str], prog: str | None = None
) -> tuple[ModelArguments, DataTrainingArguments, SmileTrainingArguments, ExperimentArguments]:
    """Parse the command line, or a single `.json` / `.yaml` file of arguments; no argument runs [`DEMO_ARGS`]."""
    try:
        model_args, data_args, training_args, experiment_args = read_args(build_parser(prog), argv or DEMO_ARGS)
    except ValueError as error:  # raised by the arguments' own checks (unknown method, a negative weight...)
        raise InputError(" ".join(str(error).split())) from error
    training_args = apply_defaults(
        model_args, data_args, training_args, given_options(argv or DEMO_ARGS, build_parser(prog))
    )
    return model_args, data_args, training_args, experiment_args


def parse_list(text: str | None, cast=str) -> list:
    return [cast(item.strip()) for item in text.split(",") if item.strip()] if text else []


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


def check_plotting(experiment_args: ExperimentArguments, training_args: SmileTrainingArguments) -> None:
    """Before any training: an [`InputError`] if `--plot_curves` cannot plot (no matplotlib), a warning if there
    will be no accuracy curve (no evaluation during training)."""
    if not experiment_args.plot_curves:
        return
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("--plot_curves needs matplotlib, which is not installed: pip install matplotlib.")
    if training_args.eval_strategy == "no":
        logger.warning("--plot_curves with --eval_strategy no: no accuracy curve (use --eval_strategy steps).")


def check_modes(training_args: SmileTrainingArguments, experiment_args: ExperimentArguments, given: set[str]) -> None:
    """Raise an [`InputError`] for what a comparison does not do: classify images (`--do_predict`: one run's model
    does, with `run_smile.py`), or, with `--do_train False` (evaluate the runs of an earlier comparison), anything
    but `--do_eval` on an `--output_dir` named explicitly (no curves: they come from training)."""
    if training_args.do_predict:
        raise InputError(
            "--do_predict: a comparison classifies no images. Classify with one run's model: run_smile.py --do_train "
            "False --do_predict --predict_dir DIR --model_name_or_path <its folder>."
        )
    if training_args.do_train:
        return
    if not training_args.do_eval:
        raise InputError("--do_train False evaluates the runs of an earlier comparison: pass --do_eval.")
    if "output_dir" not in given:
        raise InputError("--do_train False --do_eval evaluates the runs saved in --output_dir: pass that folder.")
    if experiment_args.plot_curves:
        raise InputError("--plot_curves draws the curves of training: drop it with --do_train False.")


def resume_points(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments, plan: list[Run]
) -> list[str | None]:
    """Before any training, for every run of `plan`: the checkpoint it resumes from, or None ([`resume_point`] of
    its folder: never another run's). `--resume_from_checkpoint last` resumes every run that has a checkpoint and
    starts those that never began; a checkpoint path names one run's checkpoint, so it needs a single run."""
    resume = training_args.resume_from_checkpoint
    if resume and resume.strip().lower() not in ("last", "true") and len(plan) > 1:
        raise InputError(
            f"--resume_from_checkpoint {resume}: a comparison of {len(plan)} runs resumes each from its own folder; "
            "pass --resume_from_checkpoint last."
        )
    points = []
    for run in plan:
        never_began = not os.path.isdir(run.args.output_dir) or not os.listdir(run.args.output_dir)
        points.append(resume_point(
            run.args.output_dir, run_config(model_args, data_args, run.args, run.from_scratch),
            None if never_began else resume, training_args.overwrite_output_dir,
        ))  # fmt: skip
    return points


def search_runs(
    model_args: ModelArguments, data_args: DataTrainingArguments, plan: list[Run], data_by_seed: dict,
    disable_tqdm: bool = False,
) -> list:
    """With `--hp_search_trials`: search each run's method on its seed's validation split (in the run's folder) and
    set the best values on its arguments, before any run trains; one `SearchRecord` (or None) per run of `plan`.
    The from-scratch baseline (`--scratch_baseline`) is not searched: its trials would start from the checkpoint."""
    if not data_args.hp_search_trials:
        return [None] * len(plan)
    for run in plan:
        check_not_finished(run.args)
    return [
        None if run.from_scratch else search(model_args, data_args, run.args, data_by_seed[run.args.seed], disable_tqdm)
        for run in plan
    ]


def evaluate_runs(
    model_args: ModelArguments, data_args: DataTrainingArguments, plan: list[Run], output_dir: str, results_file: str
) -> list[dict]:
    """Without training: evaluate the model saved in every run folder of `plan` (each on the data of its seed), then
    write their results and table to `<output_dir>/eval_<results_file>`; the training results stay as they are."""
    missing = [run.args.output_dir for run in plan if not os.path.isfile(os.path.join(run.args.output_dir, "config.json"))]
    if missing:
        raise InputError(
            f"--do_train False --do_eval: no saved model in {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''} (train the comparison first, with a --save_strategy other than no)."
        )
    results = []
    for run in plan:
        run_model = replace(model_args, model_name_or_path=run.args.output_dir)
        result, _ = evaluate_and_predict(run_model, data_args, run.args)
        results.append({"label": run.label, "method": run.args.method, "from_scratch": run.from_scratch,
                        "seed": run.args.seed, **result})  # fmt: skip
    if plan[0].args.should_save:
        path = write_results(results, output_dir, f"eval_{results_file}")
        print(f"\nEvaluation of the runs of {output_dir}:\n{results_table(results)}\nSaved to {path}", flush=True)
    return results


def main(argv: list[str] | None = None, prog: str | None = None) -> list[dict]:
    """A comparison from command-line arguments (default: `sys.argv[1:]`; none: the offline demo, [`DEMO_ARGS`]), or
    one `.json` / `.yaml` file of them; returns every run's results. `prog` names the command in messages.

    Before any training: the model and the plotting are checked, the data is loaded (once per seed), and the output
    folder is checked: no run of another comparison in it ([`check_comparison_dir`]), and in each run's folder
    nothing but this run's checkpoints ([`resume_points`]). `--do_train False --do_eval` evaluates the saved runs.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        command = prog or "python examples/compare_methods.py"
        print("No arguments: running the offline demo (from scratch vs fine-tuning vs SMILE, few-shot digits):\n  "
              f"{command} " + " ".join(DEMO_ARGS), flush=True)  # fmt: skip
    run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args, experiment_args = parse_args(argv, prog)
    check_modes(training_args, experiment_args, given_options(argv or DEMO_ARGS))
    configure_logging(training_args)
    if data_args.recipe is not None:
        logger.info(data_args.recipe.line())
    if experiment_args.torch_num_threads:
        torch.set_num_threads(experiment_args.torch_num_threads)
    plan = run_plan(training_args, experiment_args)
    check_search(data_args, training_args)
    if not training_args.do_train:
        results = evaluate_runs(model_args, data_args, plan, training_args.output_dir, experiment_args.results_file)
        if experiment_args.analyze and training_args.should_save:  # the runs saved by an earlier comparison
            analyze_runs([run.args.output_dir for run in plan], training_args.output_dir, argv)
        return results
    check_model(model_args, data_args)
    check_plotting(experiment_args, training_args)
    check_analysis(experiment_args.analyze, training_args)
    processor = load_processor(model_args)
    seeds = list(dict.fromkeys(run.args.seed for run in plan))
    with training_args.main_process_first(desc="loading the datasets"):
        data_by_seed = {
            seed: prepare_data(data_args, model_args, seed, processor, disable_tqdm=quiet(training_args),
                               validation=needs_validation(data_args, training_args),
                               calibration=training_args.calibration != "none")
            for seed in seeds
        }  # fmt: skip
    first = data_by_seed[seeds[0]]
    logger.info(
        f"Data: {first.description}: {len(first.train)} train / {len(first.eval)} eval examples; "
        f"world size {training_args.world_size}; {len(plan)} run(s)"
    )
    if training_args.should_save:
        check_comparison_dir(training_args.output_dir, [run.args.output_dir for run in plan],
                             experiment_args.results_file, training_args.overwrite_output_dir)  # fmt: skip
        if training_args.overwrite_output_dir:
            remove_comparison_figures(training_args.output_dir)
    searches = search_runs(model_args, data_args, plan, data_by_seed, quiet(training_args))
    resumes = resume_points(model_args, data_args, training_args, plan)
    results, curves, predictions = [], [], {}
    for run, resume, searched in zip(plan, resumes, searches):
        if run.args.should_save:
            write_run_config(run.args.output_dir, run_config(model_args, data_args, run.args, run.from_scratch))
        result, trainer = train_one(
            model_args, run.args, data_by_seed[run.args.seed], processor, label=run.label,
            from_scratch=run.from_scratch, resume=resume, recipe=data_args.recipe, search=searched,
        )  # fmt: skip
        results.append(result)
        curves.append({"label": run.label, "seed": run.args.seed, "curves": training_curves(trainer.state.log_history)})
        predictions.setdefault(run.label, []).append(eval_predictions(trainer))  # every process: predict gathers
        shut_down_dataloader_workers(trainer)
        if run.args.should_save:
            write_results([result], run.args.output_dir, experiment_args.results_file)
    if training_args.should_save:
        report(results, curves, first, model_args, training_args, experiment_args)
        comparison_figures(plan, predictions, first, training_args, experiment_args.analyze, argv)
    return results


def comparison_figures(
    plan: list[Run], predictions: dict, data: PreparedData, training_args: SmileTrainingArguments, analyze: bool,
    argv: list[str],
) -> None:
    """The figures drawn from every run, in the comparison's folder: the reliability diagram of every method on the
    evaluation split, and with `--analyze` the linearity analysis of every saved run ([`smile_hf.run.compare_extras`])."""
    shown = {label: [p for p in runs if p is not None] for label, runs in predictions.items()}
    pooled = ", seeds pooled" if any(len(runs) > 1 for runs in shown.values()) else ""
    path = write_reliability(shown, training_args.output_dir, title=f"{data.description}, evaluation split{pooled}")
    if path:
        print(f"Reliability diagram: {path}", flush=True)
    if analyze:
        analyze_runs([run.args.output_dir for run in plan], training_args.output_dir, argv)


def report(
    results: list[dict],
    curves: list[dict],
    data: PreparedData,
    model_args: ModelArguments,
    training_args: SmileTrainingArguments,
    experiment_args: ExperimentArguments,
) -> None:
    """Write the curves (`--plot_curves`), then the combined results file (naming the curves), and print the table."""
    description = f"{data.description}, {len(data.eval)} eval images, model {model_args.model_name_or_path}"
    drawn = {}
    if experiment_args.plot_curves:
        json_path, png_path = write_curves(curves, experiment_args.plot_curves, title=description)
        drawn = {CURVES_KEY: os.path.abspath(png_path)}  # deleted with these runs (--overwrite_output_dir)
    path = write_results(results, training_args.output_dir, experiment_args.results_file, **drawn)
    print(f"\nResults ({description}):")
    print(results_table(results))
    if data.source is not None and not data.source.official_split:
        print(f"Evaluated on {data.source.eval_split_role or data.source.eval_split}: not the benchmark's official split.")
    print(f"Saved to {path}", flush=True)
    if drawn:
        print(f"Curves: {png_path} (data: {json_path})", flush=True)
