# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Several runs in one call: every method of `--compare_methods` (and plain fine-tuning from random weights,
`--scratch_baseline`) on every seed of `--seeds`, each a run of [`smile_hf.run.driver`], then one results table.

What a comparison adds to its runs, in its `--output_dir`:
- the protection of its folder: never silently another comparison's ([`check_comparison_dir`]). Each run's folder
  gets the protection of one run ([`smile_hf.checkpoints.resume_point`]); the comparison's folder is refused while
  it holds runs that are not part of this comparison, and `--overwrite_output_dir` deletes them with the previous
  table and curves, so that `results.json`, the curves and the run folders always describe the same runs;
- the curves (`--plot_curves`): every run's loss terms and evaluation accuracy over the steps, read from its log
  history, written as JSON and drawn as a PNG (mean over seeds, min-max band; [`write_curves`]);
- the figures drawn from all its runs: the reliability diagram of every method (`reliability.png`, from each run's
  predictions on the evaluation split after training; [`write_reliability`]) and, with `--analyze`, the linearity
  analysis of every saved run ([`smile_hf.analysis`]: each run's `linearity.*` in its folder, the table and plot of
  all of them in `linearity.{md,json,png}`; [`analyze_runs`]).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import HfArgumentParser

from .._compat import shut_down_dataloader_workers
from ..analysis import analyze_run, write_linearity, write_linearity_report
from ..calibration import RELIABILITY_FILE, plot_reliability
from ..checkpoints import (
    FINISHED_RUN_FILE,
    RUN_CONFIG_NAME,
    OutputDirError,
    list_checkpoints,
    resumable_interrupts,
    resume_point,
    write_run_config,
)
from ..config import SmileTrainingArguments
from ..data import PreparedData
from ..metrics import softmax
from ..plotting import pyplot, save_figure
from ..tuning import TuningArguments
from .arguments import (
    INTERNAL_FIELDS,
    DataTrainingArguments,
    InputError,
    ModelArguments,
    apply_defaults,
    given_options,
    quiet,
    read_args,
    run_processes_on_cpu_without_accelerator,
)
from .driver import configure_logging, run_config, train_one
from .help import argument_groups, group_help
from .hp_search import check_not_finished, check_search, needs_validation, search
from .loading import check_model, check_unlabeled_options, load_processor, prepare_data
from .lock import run_lock
from .outputs import create_hub_repo, results_table, write_results
from .predict import evaluate_and_predict

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
    "--eval_loss_terms", "False",  # the curves plot the training terms; evaluation's would cost a third of the run
    "--save_strategy", "no",
    "--logging_steps", "50",
    "--report_to", "none",
    "--output_dir", "outputs/compare_methods_demo",
    "--overwrite_output_dir", "True",  # the demo starts afresh every time
    "--plot_curves",  # into the output folder: curves.{png,json} (`make demo-figure` copies them into benchmarks/)
]  # fmt: skip
"""What `python examples/compare_methods.py` (no argument, e.g. `make demo`) runs: a few minutes on 2 CPU cores. It
writes nothing outside its `--output_dir`."""

DEMO_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
"""The CPU kernels the demo pins (environment variables of torch's own kernels, oneDNN and MKL): the instruction set
they use would otherwise follow the CPU's (AVX2, AVX-512...), and with it the rounding of every sum, and the
demo's numbers with it. With one thread ([`DEMO_ARGS`]), these make its runs the same under a lower MKL instruction
set; the instruction set of each library alone moved one run's top-1 by up to 1.5 points."""

CURVES_IN_OUTPUT_DIR = "<output_dir>/curves.png"
"""What a bare `--plot_curves` (no value) stands for: `curves.png` (and `curves.json`) in the comparison's
`--output_dir` ([`curves_path`])."""

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
            "help": "Draw every run's loss terms and evaluation accuracy over the steps in a PNG (needs matplotlib), "
            "and write the curves as JSON beside it (same name, .json): --plot_curves alone writes "
            "<output_dir>/curves.{png,json}, --plot_curves PATH.png writes there. The accuracy curve needs "
            "evaluations during training (--eval_strategy steps).",
            "nargs": "?",
            "const": CURVES_IN_OUTPUT_DIR,
            "metavar": "PATH",
        },
    )


COMPARE_DESCRIPTION = """\
Compare transfer methods over seeds: every method of --compare_methods (and, with --scratch_baseline, plain
fine-tuning from random weights) on every seed of --seeds, each one run of smile-hf train in <output_dir>/<label>-seed
<seed>, then one table of all of them in <output_dir>/results.json. It takes every option of smile-hf train.

Run with no arguments, it is the offline demo (make demo): from scratch vs fine-tuning vs SMILE on few-shot digits
from the bundled Fashion-MNIST ResNet, 3 seeds, a few minutes on 2 CPU cores, with the curves of the quick start
(written into its output folder only).

example:
  python examples/compare_methods.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
      --compare_methods finetune,smile --seeds 0,1,2 --output_dir runs/mine"""


COMPARE_HELP = {
    "do_train": "Train every run (default: True; --do_train False --do_eval evaluates the runs saved in --output_dir).",
    "do_eval": "With --do_train False: evaluate the model saved in every run folder of --output_dir, into "
    "<output_dir>/eval_results.json (a training run always evaluates). (default: False)",
    "do_predict": "Not for comparisons: classify with one run's model, run_smile.py --do_predict. "
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
    return group_help(parser, argument_groups(groups), COMPARE_HELP, hidden=INTERNAL_FIELDS)


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


def curves_path(plot_curves: str | bool | None, output_dir: str) -> str | None:
    """The PNG the curves are drawn in: `plot_curves` (`--plot_curves PATH`), or `<output_dir>/curves.png` for a
    bare `--plot_curves` ([`CURVES_IN_OUTPUT_DIR`], or `true` in an arguments file); `None`: no curves."""
    if plot_curves is None or plot_curves is False:
        return None
    if plot_curves is True or plot_curves == CURVES_IN_OUTPUT_DIR:
        return os.path.join(output_dir, "curves.png")
    return plot_curves


def pin_demo_kernels() -> None:
    """Set [`DEMO_KERNELS`] (where the environment does not set them already) before torch runs any kernel; a
    warning if torch's own kernels were already chosen (the demo's numbers may then differ from its table)."""
    for name, value in DEMO_KERNELS.items():
        os.environ.setdefault(name, value)
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT" and os.environ["ATEN_CPU_CAPABILITY"] == "default":
        logger.warning("torch chose its CPU kernels before the demo could pin them: its numbers may differ from the "
                       "table; run it in a fresh process (make demo).")  # fmt: skip


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
    """Raise an [`InputError`] for what a comparison does not do: classify images or texts (`--do_predict`: one run's model
    does, with `run_smile.py`), or, with `--do_train False` (evaluate the runs of an earlier comparison), anything
    but `--do_eval` on an `--output_dir` named explicitly (no curves: they come from training)."""
    if training_args.do_predict:
        raise InputError(
            "--do_predict: a comparison classifies no images or texts. Classify with one run's model: run_smile.py "
            "--do_train False --do_predict --predict_dir DIR (--predict_file FILE for text) --model_name_or_path "
            "<its folder>."
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
        pin_demo_kernels()
        command = prog or "python examples/compare_methods.py"
        pinned = " ".join(f"{name}={os.environ[name]}" for name in DEMO_KERNELS)
        print("No arguments: running the offline demo (from scratch vs fine-tuning vs SMILE, few-shot digits), with "
              f"the CPU kernels pinned:\n  {pinned} {command} " + " ".join(DEMO_ARGS), flush=True)  # fmt: skip
    run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args, experiment_args = parse_args(argv, prog)
    check_modes(training_args, experiment_args, given_options(argv or DEMO_ARGS))
    configure_logging(training_args)
    with run_lock(training_args), resumable_interrupts(training_args.output_dir, runs=True):  # once: runs inside
        return compare(model_args, data_args, training_args, experiment_args, argv)


def compare(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: SmileTrainingArguments,
    experiment_args: ExperimentArguments,
    argv: Sequence[str] = (),
) -> list[dict]:
    """The comparison of [`main`] once its arguments are parsed (and its folder locked); returns every run's
    results."""
    if data_args.recipe is not None:
        logger.info(data_args.recipe.line())
    if experiment_args.torch_num_threads:
        torch.set_num_threads(experiment_args.torch_num_threads)
    plan = run_plan(training_args, experiment_args)
    check_search(data_args, training_args)
    check_unlabeled_options(data_args, list(dict.fromkeys(run.args.method for run in plan)))
    check_analysis(experiment_args.analyze, training_args, data_args.is_text())
    if not training_args.do_train:
        results = evaluate_runs(model_args, data_args, plan, training_args.output_dir, experiment_args.results_file)
        if experiment_args.analyze and training_args.should_save:  # the runs saved by an earlier comparison
            analyze_runs([run.args.output_dir for run in plan], training_args.output_dir, argv)
        return results
    check_model(model_args, data_args)
    for run in plan:  # --push_to_hub: every run's repository exists before anything trains
        create_hub_repo(run.args)
    check_plotting(experiment_args, training_args)
    processor = load_processor(model_args, data_args)
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
    evaluation split ([`write_reliability`]), and with `--analyze` the linearity analysis of every saved run
    ([`analyze_runs`])."""
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
    description = f"{data.description}, {len(data.eval)} eval {data.items}, model {model_args.model_name_or_path}"
    drawn = {}
    if experiment_args.plot_curves:
        png_path = curves_path(experiment_args.plot_curves, training_args.output_dir)
        json_path, png_path = write_curves(curves, png_path, title=description)
        drawn = {CURVES_KEY: os.path.abspath(png_path)}  # deleted with these runs (--overwrite_output_dir)
    path = write_results(results, training_args.output_dir, experiment_args.results_file, **drawn)
    print(f"\nResults ({description}):")
    print(results_table(results))
    if data.source is not None and not data.source.official_split:
        print(f"Evaluated on {data.source.eval_split_role or data.source.eval_split}: not the benchmark's official split.")
    print(f"Saved to {path}", flush=True)
    if drawn:
        print(f"Curves: {png_path} (data: {json_path})", flush=True)


# ---- the comparison's folder ------------------------------------------------------------------------------------------

RUN_MARKERS = (RUN_CONFIG_NAME, FINISHED_RUN_FILE, "model.safetensors", "trainer_state.json")
"""Files that make a folder a run's: what a run writes (its arguments, results, model, state)."""
CURVES_KEY = "curves"
"""Key of the combined results file that names the curves drawn from its runs (PNG and JSON)."""


def is_run_folder(path: str) -> bool:
    """Whether `path` holds (part of) a run: one of [`RUN_MARKERS`] or a `checkpoint-<step>` folder."""
    if not os.path.isdir(path):
        return False
    return any(os.path.exists(os.path.join(path, name)) for name in RUN_MARKERS) or bool(list_checkpoints(path))


def holds_run_files(path: str) -> bool:
    """Whether `path` itself holds a run's files (checkpoints, arguments, model, state; not only a results table)."""
    names = [name for name in RUN_MARKERS if name != FINISHED_RUN_FILE]
    return any(os.path.exists(os.path.join(path, name)) for name in names) or bool(list_checkpoints(path))


def other_runs(output_dir: str, run_dirs: list[str]) -> list[str]:
    """The runs in `output_dir` that are not among `run_dirs` (this comparison's run folders): its sub-folders that
    are run folders, and `output_dir` itself when it holds a run but is not one of `run_dirs`."""
    if not os.path.isdir(output_dir):
        return []
    planned = {os.path.normpath(path) for path in run_dirs}
    found = [
        path for name in sorted(os.listdir(output_dir))
        if os.path.normpath(path := os.path.join(output_dir, name)) not in planned and is_run_folder(path)
    ]  # fmt: skip
    if os.path.normpath(output_dir) not in planned and holds_run_files(output_dir):
        found.insert(0, output_dir)  # a single run's files at the top (a results.json alone is the table's)
    return found


def recorded_curves(results_path: str) -> list[str]:
    """The curve files (PNG, JSON) that the combined results file `results_path` says were drawn from its runs."""
    try:
        with open(results_path, encoding="utf-8") as f:
            png = json.load(f).get(CURVES_KEY)
    except (OSError, ValueError, AttributeError):
        return []
    return [png, os.path.splitext(png)[0] + ".json"] if isinstance(png, str) else []


def check_comparison_dir(output_dir: str, run_dirs: list[str], results_file: str, overwrite: bool) -> None:
    """Before any training: raise an [`OutputDirError`] naming them if `output_dir` holds runs other than
    `run_dirs`; with `overwrite`, delete them, the combined `results_file` and the curves it names instead."""
    others = other_runs(output_dir, run_dirs)
    if others and not overwrite:
        shown = ", ".join(os.path.relpath(path, output_dir) for path in others[:5]) + (" ..." if len(others) > 5 else "")
        raise OutputDirError(
            f"{output_dir} holds {len(others)} other run(s) than this comparison's ({shown}): start fresh with "
            "--overwrite_output_dir True (deletes them, with the previous table and curves) or another --output_dir."
        )
    if not overwrite:
        return
    results_path = os.path.join(output_dir, results_file)
    top = os.path.normpath(output_dir)
    top_files = [os.path.join(output_dir, name) for name in RUN_MARKERS] + [p for _, p in list_checkpoints(output_dir)]
    stale = [p for p in others if os.path.normpath(p) != top] + (top_files if output_dir in others else [])
    for path in [*stale, *recorded_curves(results_path)]:
        if os.path.isdir(path):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            shutil.rmtree(path)
        elif os.path.exists(path):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            os.remove(path)
    if len(run_dirs) > 1 and os.path.isfile(results_path):
        os.remove(results_path)


# ---- curves -----------------------------------------------------------------------------------------------------------

LABEL_STYLES: dict[str, dict[str, str]] = {
    SCRATCH: {"color": "tab:gray", "linestyle": ":"},
    "finetune": {"color": "tab:blue", "linestyle": "--"},
    "smile": {"color": "tab:red", "linestyle": "-"},
}
"""Line style of the run labels of the demo."""

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")  # fmt: skip
"""matplotlib's default colour cycle (tab10), by name."""

LINESTYLES = ("-", "--", "-.", ":")


def label_styles(labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """A line style for each of `labels` (the labels of one plot, kept in their order): [`LABEL_STYLES`] for the demo's labels, and for
    every other label, in order, the next colour of [`PALETTE`] that no label of the plot has taken, drawn solid;
    once the colours run out, the (colour, line style) pairs no label has taken. No two labels share a style (up
    to the 40 pairs there are)."""
    styles = {label: dict(LABEL_STYLES[label]) for label in labels if label in LABEL_STYLES}
    used = {s["color"] for s in styles.values()}
    taken = {(s["color"], s["linestyle"]) for s in styles.values()}
    candidates = [(c, "-") for c in PALETTE if c not in used]
    candidates += [(c, ls) for ls in LINESTYLES[1:] for c in PALETTE if (c, ls) not in taken]
    others = [label for label in dict.fromkeys(labels) if label not in styles]
    for i, label in enumerate(others):
        colour, linestyle = candidates[i % len(candidates)]
        styles[label] = {"color": colour, "linestyle": linestyle}
    return {label: styles[label] for label in dict.fromkeys(labels)}  # in the order of `labels`


CURVE_SERIES = {
    "loss_main": "loss_main: cross-entropy (SMILE's: of mixed inputs)",
    "loss_aux": "loss_aux: source head vs teacher (SMILE)",
    "loss_reg": "loss_reg: features vs teacher's (SMILE)",
    "loss_cls": "loss_cls: heads' weight penalty (SMILE)",
    "eval_accuracy": "eval accuracy (%)",
}
"""The panels of `--plot_curves` and their titles, in this order (the `loss_<term>` of other methods follow)."""


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
    plt = pyplot("Plotting the curves")
    series = curve_series(runs)
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, series):
        draw_panel(ax, runs, name)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    return save_figure(fig, path, title)


def write_curves(runs: list[dict], path: str, title: str = "") -> tuple[str, str]:
    """Write the curves of `runs` as JSON (`path` with the extension `.json`: `{"title", "runs"}`), then plot them
    into the PNG `path` ([`plot_curves`]). Returns both paths."""
    json_path = os.path.splitext(path)[0] + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"title": title, "runs": runs}, f, indent=1)
    return json_path, plot_curves(runs, path, title)


# ---- figures drawn from all the runs ----------------------------------------------------------------------------------

LINEARITY_FILE = "linearity.md"
"""The linearity table of every run (`--analyze`), in the comparison's folder (with `.json` and `.png` beside)."""


def figure_files(output_dir: str) -> list[str]:
    """The figures drawn from all the runs in the comparison folder `output_dir`: the reliability diagram and the
    linearity table and plot (deleted with the runs they were drawn from, `--overwrite_output_dir`)."""
    stem = os.path.join(output_dir, os.path.splitext(LINEARITY_FILE)[0])
    return [os.path.join(output_dir, RELIABILITY_FILE), *(f"{stem}.{ext}" for ext in ("md", "json", "png"))]


def remove_comparison_figures(output_dir: str) -> None:
    """Delete the figures of an earlier comparison in `output_dir` ([`figure_files`])."""
    for path in figure_files(output_dir):
        if os.path.isfile(path):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            os.remove(path)


def check_analysis(analyze: bool, training_args: SmileTrainingArguments, text: bool = False) -> None:
    """Before any training: an [`InputError`] if `--analyze` cannot measure the runs (they would not be saved, or
    they are `text` classifiers: the analysis mixes images)."""
    if analyze and text:
        raise InputError("--analyze: the linearity analysis mixes images and does not measure text models: drop it.")
    if analyze and training_args.do_train and training_args.save_strategy == "no":
        raise InputError("--analyze measures the saved models: drop --save_strategy no (e.g. --save_strategy steps).")


def eval_predictions(trainer) -> tuple[np.ndarray, np.ndarray] | None:
    """The trained model's probabilities on the trainer's evaluation split and their labels (`trainer.predict`: run
    it on every process); None without an evaluation split."""
    if trainer.eval_dataset is None:
        return None
    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="reliability")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return softmax(np.asarray(logits, dtype=np.float64)), np.asarray(prediction.label_ids)


def write_reliability(predictions: dict[str, list[tuple[np.ndarray, np.ndarray]]], output_dir: str, title: str = "") -> str | None:
    """The reliability diagram of every method (`label -> [(probabilities, labels) of each seed]`, the seeds pooled)
    in `output_dir`/[`RELIABILITY_FILE`]; None (with a warning) without matplotlib or predictions."""
    curves = {
        label: (np.concatenate([p for p, _ in runs]), np.concatenate([y for _, y in runs]))
        for label, runs in predictions.items() if runs
    }  # fmt: skip
    if not curves:
        return None
    try:
        return plot_reliability(curves, os.path.join(output_dir, RELIABILITY_FILE), title=title)
    except ImportError as error:
        logger.warning(f"No reliability diagram: {error}")
        return None


def analyze_runs(run_dirs: Sequence[str], output_dir: str, argv: Sequence[str] = ()) -> list[str]:
    """[`analyze_run`] of every saved run of `run_dirs` (its `linearity.*` written in its folder, unless that is
    `output_dir`), then the table and plot of all of them in `output_dir` ([`write_linearity_report`], which records
    the comparison's arguments `argv`); prints and returns the paths of the combined files."""
    results = []
    for run_dir in run_dirs:
        logger.info(f"Linearity analysis of {run_dir}")
        result = analyze_run(run_dir)
        if os.path.normpath(run_dir) != os.path.normpath(output_dir):
            write_linearity(result, run_dir)
        results.append(result)
    command = " ".join(["python examples/compare_methods.py", *argv])
    paths = write_linearity_report(results, os.path.join(output_dir, LINEARITY_FILE), command)
    print("Linearity analysis: " + ", ".join(paths), flush=True)
    return paths
