#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune any `AutoModelForImageClassification` checkpoint on a target dataset with SMILE or a baseline: one run.

In the style of transformers' `examples/pytorch/image-classification/run_image_classification.py`; the data work
is done by `smile_hf.data`, the metrics by `smile_hf.metrics`, the training by `smile_hf.SmileTrainer`. Several
methods or seeds in one call, and the offline demo, are `examples/compare_methods.py`.

    # A benchmark preset, the reference's optimisation recipe
    python examples/run_smile.py --dataset cub200 --model_name_or_path microsoft/resnet-50 \\
        --method smile --reference_recipe True --max_steps 9000 --output_dir runs/cub200-smile

    # Your own image folders (one sub-folder per class), a 10-shot subset
    python examples/run_smile.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
        --model_name_or_path microsoft/resnet-50 --output_dir runs/mine

    # Offline: the bundled Fashion-MNIST ResNet (the default --model_name_or_path) on few-shot digits
    python examples/run_smile.py --dataset digits --train_samples_per_class 10 --method smile --output_dir runs/digits

    # Arguments from a file
    python examples/run_smile.py config.json   # or config.yaml

    # Two processes: on GPUs, or on a CPU-only machine (gloo)
    accelerate launch --multi_gpu --num_processes 2 examples/run_smile.py ...
    torchrun --nproc_per_node 2 examples/run_smile.py ...

The run trains, evaluates, saves (unless `--save_strategy no`), pushes to the Hub with `--push_to_hub`, and writes
`results.json` in `--output_dir`. Bad input (no arguments, unknown dataset, missing columns, labels out of range,
empty folders, a model that is not an image classifier or cannot be reached) stops the script with one
`run_smile.py: error: ...` line before training.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageClassification, HfArgumentParser, set_seed
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import UnsupportedBackboneError
from smile_hf.checkpoints import IncompleteCheckpointError, OutputDirError, resume_point, write_run_config
from smile_hf.data import (
    CORRUPT_IMAGE_POLICIES,
    DATASET_PRESETS,
    DataError,
    PreparedData,
    TransformConfig,
    one_line,
    prepare_datasets,
    set_transforms,
)
from smile_hf.guard import NonFiniteLossError, NonFiniteWeightsError
from smile_hf.metrics import ClassificationMetrics
from smile_hf.modeling import load_image_processor

logger = logging.getLogger("run_smile")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CHECKPOINT = "checkpoints/fmnist-resnet-tiny"
"""Source checkpoint shipped in the repository (a tiny ResNet pre-trained on Fashion-MNIST)."""


@dataclass
class ModelArguments:
    """Which checkpoint to fine-tune."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Any AutoModelForImageClassification checkpoint: a local folder or a Hub id (e.g. "
            f"microsoft/resnet-50). Default: the bundled {BUNDLED_CHECKPOINT}."
        },
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Classes of the new head (default: the number of classes of the data)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and datasets."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models or datasets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on."""

    dataset: str | None = field(
        default=None, metadata={"help": f"A dataset preset: {', '.join(sorted(DATASET_PRESETS))}."}
    )
    train_dir: str | None = field(
        default=None, metadata={"help": "Folder of training images, one sub-folder per class (instead of --dataset)."}
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Folder of evaluation images (default: --train_val_split of --train_dir)."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: the preset's/image)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: the preset's/label)."})
    train_val_split: float = field(
        default=0.15, metadata={"help": "Fraction of train held out for evaluation when there is no eval split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a random subset of this size."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on a random subset of this size."})
    train_samples_per_class: int | None = field(
        default=None, metadata={"help": "Few-shot: train on this many examples of each class (drawn with --seed)."}
    )
    corrupt_images: str = field(
        default="error",
        metadata={
            "help": "Undecodable images: 'error' stops at the first one and names it; 'skip' drops them all "
            "(after a scan) and logs their indices.",
            "choices": list(CORRUPT_IMAGE_POLICIES),
        },
    )
    random_horizontal_flip: bool = field(default=True, metadata={"help": "Flip training images left-right."})
    crop_pct: float | None = field(
        default=None, metadata={"help": "Crop size / resize size (default: the processor's, else 224/256)."}
    )


class InputError(ValueError):
    """Bad command-line input found before training (one line, shown as is)."""


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> HfArgumentParser:
    return HfArgumentParser((ModelArguments, DataTrainingArguments, SmileTrainingArguments))


def read_args(parser: HfArgumentParser, argv: list[str]) -> tuple:
    """Parse the command line, or a single `.json` / `.yaml` file of arguments, into `parser`'s dataclasses."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, SmileTrainingArguments]:
    """Parse the command line, or a single `.json` / `.yaml` file of arguments; no argument is an [`InputError`]."""
    if not argv:
        raise InputError(
            "no arguments: pass --dataset NAME (a preset) or --train_dir DIR (your own image folders), or a .json / "
            ".yaml file of arguments; --help lists every option. The offline demo is examples/compare_methods.py."
        )
    try:
        model_args, data_args, training_args = read_args(build_parser(), argv)
    except ValueError as error:  # raised by the arguments' own checks (unknown method, a negative weight...)
        raise InputError(" ".join(str(error).split())) from error
    finalize_args(model_args, training_args)
    return model_args, data_args, training_args


def finalize_args(model_args: ModelArguments, training_args: SmileTrainingArguments) -> None:
    """Fill in what the script needs whatever the user passed."""
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = resolve_bundled(BUNDLED_CHECKPOINT)
    if not has_accelerator():
        training_args.dataloader_pin_memory = False  # no effect without an accelerator, but a warning per run


def resolve_bundled(path: str) -> str:
    """A repository-relative path, found from the current directory or from the repository root."""
    return path if os.path.isdir(path) else str(REPO_ROOT / path)


def has_accelerator() -> bool:
    return torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()


def run_processes_on_cpu_without_accelerator() -> None:
    """Several processes (torchrun, `accelerate launch --multi_gpu`) on a machine without an accelerator: tell the
    Trainer to run them on CPU with gloo; unless told, transformers leaves each process alone (world size 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def check_model(model_args: ModelArguments) -> None:
    """Raise an [`InputError`] unless the checkpoint can be read and is an image classifier (config only)."""
    name = model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(
            name, cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
            trust_remote_code=model_args.trust_remote_code,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        where = "not a local folder with a config.json, and the Hugging Face Hub"
        raise InputError(
            f"Cannot load --model_name_or_path '{name}': {where} cannot be reached or has no such model "
            f"(offline?). Pass a local checkpoint folder. [{type(error).__name__}]"
        ) from error
    if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING and not _has_remote_classifier(config):
        raise InputError(
            f"--model_name_or_path '{name}' is a '{config.model_type}' model, not an image classifier: "
            "AutoModelForImageClassification cannot load it. Use an image classification checkpoint."
        )


def _has_remote_classifier(config) -> bool:
    return "AutoModelForImageClassification" in (getattr(config, "auto_map", None) or {})


def loading_kwargs(model_args: ModelArguments) -> dict:
    """Where and how to load the checkpoint: the same for the student, the source model and the image processor."""
    return {
        "cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }  # fmt: skip


def load_processor(model_args: ModelArguments):
    """The checkpoint's image processor, or `None` (ImageNet defaults) if it has none."""
    processor = load_image_processor(model_args.model_name_or_path, **loading_kwargs(model_args))
    if processor is None:
        logger.warning("The checkpoint has no image processor: using 224 x 224 crops and ImageNet mean / std.")
    return processor


# ---------------------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------------------


def prepare_data(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int, processor) -> PreparedData:
    data = prepare_datasets(
        dataset=data_args.dataset,
        train_dir=data_args.train_dir,
        validation_dir=data_args.validation_dir,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        num_labels=model_args.num_labels,
        train_val_split=data_args.train_val_split,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        train_samples_per_class=data_args.train_samples_per_class,
        corrupt_images=data_args.corrupt_images,
        seed=seed,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
    )
    config = TransformConfig.from_image_processor(processor, data_args.crop_pct, data_args.random_horizontal_flip)
    set_transforms(data, config)
    return data


def random_init_model(model_args: ModelArguments, data: PreparedData, **load_kwargs):
    """The checkpoint's architecture with random weights and a head for the data's classes."""
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, num_labels=len(data.label_names), id2label=data.id2label,
        label2id={v: k for k, v in data.id2label.items()}, **load_kwargs,
    )  # fmt: skip
    return AutoModelForImageClassification.from_config(config, trust_remote_code=model_args.trust_remote_code)


def train_one(
    model_args: ModelArguments,
    training_args: SmileTrainingArguments,
    data: PreparedData,
    processor,
    label: str | None = None,
    from_scratch: bool = False,
    resume: str | None = None,
) -> tuple[dict, SmileTrainer]:
    """Train (from checkpoint `resume` if given), evaluate, save and push one run; return its results (named `label`,
    default: the method) and its trainer. `from_scratch` starts from the checkpoint's architecture with random
    weights (no teacher)."""
    set_seed(training_args.seed)
    if from_scratch:
        model = random_init_model(model_args, data, **loading_kwargs(model_args))
    else:  # SmileTrainer loads the student (new head for the data's classes) and, if needed, the source model
        model = model_args.model_name_or_path
        training_args.model_init_kwargs = {
            **(training_args.model_init_kwargs or {}), **loading_kwargs(model_args),
            "num_labels": len(data.label_names), "id2label": data.id2label,
        }  # fmt: skip
    try:
        trainer = SmileTrainer(
            model=model,
            args=training_args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            compute_metrics=ClassificationMetrics(),
            processing_class=processor,
        )
    except (OSError, SafetensorError) as error:  # a model folder without weights, or with damaged ones
        raise InputError(
            f"Cannot load the weights of --model_name_or_path '{model_args.model_name_or_path}': {one_line(error)}"
        ) from error
    if resume:
        logger.info(f"Resuming from {resume}")
    train_result = trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate()
    if training_args.save_strategy != "no":
        trainer.save_model()
        trainer.save_state()
    if training_args.push_to_hub:
        trainer.push_to_hub(
            finetuned_from=None if from_scratch else model_args.model_name_or_path,
            tasks="image-classification",
            dataset=data.description,
            tags=["image-classification", training_args.method],
        )
    return {
        "label": label or training_args.method,
        "method": training_args.method,
        "from_scratch": from_scratch,
        "seed": training_args.seed,
        "model": model_args.model_name_or_path,
        "data": data.description,
        "num_labels": len(data.label_names),
        "num_train": len(data.train),
        "num_eval": len(data.eval),
        "world_size": training_args.world_size,
        "global_step": trainer.state.global_step,
        "train_runtime": train_result.metrics.get("train_runtime"),
        "metrics": metrics,
    }, trainer


# ---------------------------------------------------------------------------------------------------------------------
# Results: results.json and its table (compare_methods.py writes the same, one row per seed)
# ---------------------------------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return _pct(values[0])
    return f"{_pct(statistics.mean(values))} ± {100 * statistics.stdev(values):.2f}"


def results_table(runs: list[dict]) -> str:
    """A Markdown table: one row per seed, top-1 of each run label (method, or `scratch`) side by side, then mean ±
    sample standard deviation over seeds of top-1, top-5 and ECE."""
    methods = list(dict.fromkeys(r.get("label", r["method"]) for r in runs))
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    by_key = {(r.get("label", r["method"]), r["seed"]): r["metrics"] for r in runs}
    lines = ["| seed | " + " | ".join(f"{m} top-1 (%)" for m in methods) + " |"]
    lines.append("|---|" + "---:|" * len(methods))
    for seed in seeds:
        cells = [_pct(by_key.get((m, seed), {}).get("eval_accuracy")) for m in methods]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")

    def column(method: str, key: str) -> list[float]:
        return [by_key[(method, s)][key] for s in seeds if key in by_key.get((method, s), {})]

    for label, key in (("top-1", "eval_accuracy"), ("top-5", "eval_top5_accuracy"), ("ECE", "eval_ece")):
        lines.append(f"| mean {label} | " + " | ".join(_mean_std(column(m, key)) for m in methods) + " |")
    return "\n".join(lines)


def write_results(runs: list[dict], output_dir: str, file_name: str = "results.json") -> str:
    """Write `{"runs": runs, "table": results_table(runs)}` to `output_dir/file_name`; return its path."""
    path = os.path.join(output_dir, file_name)
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"runs": runs, "table": results_table(runs)}, f, indent=2, default=str)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def configure_logging(training_args: SmileTrainingArguments, *loggers: str) -> None:
    """Log to stderr at the process's log level: this script, `smile_hf`, `transformers`, `datasets` and `loggers`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler()])
    level = training_args.get_process_log_level()
    for name in ("run_smile", "smile_hf", *loggers):
        logging.getLogger(name).setLevel(level if level != logging.WARNING else logging.INFO)
    transformers.utils.logging.set_verbosity(level)
    import datasets

    datasets.utils.logging.set_verbosity(level)


def run(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> tuple[dict, SmileTrainer]:
    """Check the model, prepare the data, then train, evaluate, save and push; write and print `results.json`.
    Return the run's results and its trainer."""
    configure_logging(training_args)
    check_model(model_args)
    processor = load_processor(model_args)
    with training_args.main_process_first(desc="loading the datasets"):
        data = prepare_data(data_args, model_args, training_args.seed, processor)
    logger.info(
        f"Data: {data.description}: {len(data.train)} train / {len(data.eval)} eval examples; "
        f"world size {training_args.world_size}"
    )
    config = run_config(model_args, data_args, training_args)
    resume = resume_point(
        training_args.output_dir, config, training_args.resume_from_checkpoint, training_args.overwrite_output_dir
    )
    if training_args.should_save:
        write_run_config(training_args.output_dir, config)
    result, trainer = train_one(model_args, training_args, data, processor, resume=resume)
    if training_args.should_save:
        path = write_results([result], training_args.output_dir)
        print(f"\nResults ({data.description}, {len(data.eval)} eval images, model {model_args.model_name_or_path}):")
        print(results_table([result]))
        print(f"Saved to {path}", flush=True)
    return result, trainer


def run_config(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> dict:
    """What defines this run (compared with the one saved in `--output_dir` before resuming from its checkpoints):
    the checkpoint (name, revision, classes), every data argument, and the training arguments that change the
    trained weights (`SmileTrainingArguments.run_defining_values`)."""
    model = {"model_name_or_path": model_args.model_name_or_path, "model_revision": model_args.model_revision,
             "num_labels": model_args.num_labels}  # fmt: skip
    return json.loads(json.dumps(
        {"model": model, "data": asdict(data_args), "training": training_args.run_defining_values()}, default=str
    ))  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args = parse_args(argv)
    result, _ = run(model_args, data_args, training_args)
    return result


USER_ERRORS = (DataError, InputError, UnsupportedBackboneError, IncompleteCheckpointError, OutputDirError)
"""Bad input, reported as one `<script>: error: ...` line on stderr (exit status 2) instead of a traceback."""
RUN_ERRORS = (NonFiniteLossError, NonFiniteWeightsError)
"""A run that failed (it diverged), reported as one line on stderr with exit status 1."""


def cli() -> None:
    try:
        main()
    except USER_ERRORS as error:
        print(f"run_smile.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except RUN_ERRORS as error:
        print(f"run_smile.py: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
