#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune any `AutoModelForImageClassification` checkpoint on a target dataset with SMILE or a baseline: one run.

In the style of transformers' `examples/pytorch/image-classification/run_image_classification.py`; the data work
is done by `smile_hf.data`, the metrics by the `evaluate` module of `smile_hf.metrics`, the training by `smile_hf.SmileTrainer`. Several
methods or seeds in one call, and the offline demo, are `examples/compare_methods.py`.

    # The headline command: SMILE on Food-101 from microsoft/resnet-50 (the default model for Hub presets), into
    # runs/food101-smile-resnet-50 (the default output folder)
    accelerate launch examples/run_smile.py --dataset food101

    # A benchmark preset, the reference's optimisation recipe
    python examples/run_smile.py --dataset cub200 --method smile --reference_recipe True --max_steps 9000

    # Your own image folders (one sub-folder per class), a 10-shot subset
    python examples/run_smile.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
        --model_name_or_path microsoft/resnet-50 --output_dir runs/mine

    # Offline: the bundled Fashion-MNIST ResNet (the default model of --dataset digits) on few-shot digits
    python examples/run_smile.py --dataset digits --train_samples_per_class 10 --method smile

    # Without training: evaluate a trained model folder, classify a folder of images into predictions.csv
    python examples/run_smile.py --do_train False --do_eval --dataset digits --model_name_or_path runs/digits-smile
    python examples/run_smile.py --do_train False --do_predict --predict_dir my_images --model_name_or_path runs/m

    # Arguments from a file
    python examples/run_smile.py config.json   # or config.yaml

    # Two processes: on GPUs, or on a CPU-only machine (gloo)
    accelerate launch --multi_gpu --num_processes 2 examples/run_smile.py ...
    torchrun --nproc_per_node 2 examples/run_smile.py ...

The run trains, evaluates, saves (unless `--save_strategy no`), writes the model card (`README.md`) and
`results.json` in `--output_dir` (default: `runs/<dataset>-<method>-<model>`), and pushes to the Hub with
`--push_to_hub`. Offline, a model or dataset that is not in the local cache is one error line naming what to
download. Bad input (no arguments, unknown dataset, missing columns, labels out of range,
empty folders, a model that is not an image classifier or cannot be reached) stops the script with one
`run_smile.py: error: ...` line before training.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import transformers
from huggingface_hub import constants as hub_constants
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageClassification, HfArgumentParser, Trainer, set_seed
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf._compat import accelerator_available
from smile_hf.backbones import UnsupportedBackboneError
from smile_hf.checkpoints import IncompleteCheckpointError, OutputDirError, resume_point, write_run_config
from smile_hf.data import (
    CORRUPT_IMAGE_POLICIES,
    DATASET_PRESETS,
    DataError,
    ImageTransform,
    PreparedData,
    TransformConfig,
    collate,
    eval_image_processor,
    get_preset,
    image_files,
    one_line,
    prepare_datasets,
    set_transforms,
)
from smile_hf.distributed import shutdown
from smile_hf.guard import NonFiniteLossError, NonFiniteWeightsError
from smile_hf.inference import PREDICTIONS_FILE, classify_files, write_predictions
from smile_hf.metrics import ClassificationMetrics, load_classification_metric
from smile_hf.modeling import load_image_processor

logger = logging.getLogger("run_smile")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CHECKPOINT = "checkpoints/fmnist-resnet-tiny"
"""Source checkpoint shipped in the repository (a tiny ResNet pre-trained on Fashion-MNIST): the default model of
the offline `--dataset digits` (and of the demo), never of real images."""
DEFAULT_MODEL = "microsoft/resnet-50"
"""The default `--model_name_or_path` for Hub presets and `--train_dir`: the SMILE paper's backbone (ResNet-50
pre-trained on ImageNet-1k)."""


@dataclass
class ModelArguments:
    """Which checkpoint to fine-tune."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Any AutoModelForImageClassification checkpoint: a local folder or a Hub id. Default: "
            f"{DEFAULT_MODEL} (the paper's backbone) for Hub presets and --train_dir; the bundled "
            f"{BUNDLED_CHECKPOINT} (a tiny Fashion-MNIST ResNet) for the offline --dataset digits."
        },
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Classes of the new head (default: the number of classes of the data)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and datasets."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models or datasets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    license: str | None = field(
        default=None,
        metadata={"help": "License of the fine-tuned model, for its card (default: the base model's, if its card says)."},
    )
    default_model_used = False  # set (on the instance) when --model_name_or_path was filled in by default


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
            "help": "Undecodable images: 'error' scans the validation split before training (and stops at the first "
            "undecodable training image), naming the files; 'skip' drops them all (after a scan) and logs them.",
            "choices": list(CORRUPT_IMAGE_POLICIES),
        },
    )
    random_horizontal_flip: bool = field(default=True, metadata={"help": "Flip training images left-right."})
    crop_pct: float | None = field(
        default=None, metadata={"help": "Crop size / resize size (default: the processor's, else 224/256)."}
    )
    predict_dir: str | None = field(
        default=None,
        metadata={"help": "With --do_predict: a folder of images (searched recursively) to classify into "
                  "<output_dir>/predictions.csv (file, then the top-k labels and scores)."},
    )  # fmt: skip
    top_k: int = field(default=5, metadata={"help": "Labels and scores per image in predictions.csv."})


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
    finalize_args(model_args, training_args, data_args, given_options(argv))
    check_inference_args(model_args, data_args, training_args)
    return model_args, data_args, training_args


def check_inference_args(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> None:
    """Raise an [`InputError`] unless the evaluate / predict options make sense: without training (`--do_train
    False`), a model named explicitly and something to do (`--do_eval`, `--do_predict`); `--do_predict` needs
    `--predict_dir`, an existing folder, and `--top_k` >= 1."""
    if not training_args.do_train:
        if model_args.default_model_used:
            raise InputError(
                "--do_train False evaluates or classifies with a trained model: pass --model_name_or_path (the "
                "output folder of a training run, or any exported image classifier)."
            )
        if not (training_args.do_eval or training_args.do_predict):
            raise InputError(
                "--do_train False and nothing else to do: pass --do_eval (the validation data of --dataset, or "
                "--validation_dir) and/or --do_predict --predict_dir DIR (a folder of images to classify)."
            )
    if training_args.do_predict and not (data_args.predict_dir and os.path.isdir(data_args.predict_dir)):
        raise InputError(f"--do_predict needs --predict_dir, an existing folder of images (got {data_args.predict_dir}).")
    if data_args.top_k < 1:
        raise InputError(f"--top_k must be >= 1, got {data_args.top_k}.")


def given_options(argv: list[str]) -> set[str]:
    """The names of the options set explicitly: the `--name` / `--name=value` flags of a command line, or the keys
    of a single `.json` / `.yaml` file of arguments."""
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        import yaml  # JSON is YAML

        with open(argv[0], encoding="utf-8") as f:
            return set(yaml.safe_load(f) or {})
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def finalize_args(
    model_args: ModelArguments,
    training_args: SmileTrainingArguments,
    data_args: DataTrainingArguments | None = None,
    given: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Fill in what the script needs whatever the user passed, and the defaults that depend on other arguments
    (unless set explicitly, named in `given`): `--do_train` (on unless `--do_train False`), the model
    ([`default_model`]), `--output_dir` (`runs/<dataset>-<method>-<model>`), `--report_to` (TensorBoard when
    installed), the data loader workers."""
    if "do_train" not in given:
        training_args.do_train = True  # the script trains unless told not to (--do_train False: evaluate / predict)
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = default_model(data_args)
        model_args.default_model_used = True
    if data_args is not None and "output_dir" not in given:
        training_args.output_dir = default_output_dir(model_args, data_args, training_args)
    if "report_to" not in given and importlib.util.find_spec("tensorboard") is not None:
        training_args.report_to = ["tensorboard"]
    set_dataloader_defaults(training_args, given)


def default_model(data_args: DataTrainingArguments | None) -> str:
    """The bundled toy checkpoint for a preset built offline (`--dataset digits`), else [`DEFAULT_MODEL`]."""
    if data_args is not None and data_args.dataset is not None and get_preset(data_args.dataset).hub_id is None:
        return resolve_bundled(BUNDLED_CHECKPOINT)
    return DEFAULT_MODEL


def default_output_dir(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> str:
    """`runs/<dataset>-<method>-<model>`: the preset (or the `--train_dir` / `--validation_dir` / `--predict_dir`
    folder's name), the method (`predict` without training), the last part of the model's name or path."""
    folder = data_args.train_dir or data_args.validation_dir or data_args.predict_dir or "data"
    dataset = data_args.dataset or os.path.basename(os.path.normpath(folder))
    model = os.path.basename(os.path.normpath(model_args.model_name_or_path))
    return os.path.join("runs", f"{dataset}-{training_args.method if training_args.do_train else 'predict'}-{model}")


def set_dataloader_defaults(
    training_args: SmileTrainingArguments, given: set[str] | frozenset[str], cpu_count: int | None = None
) -> None:
    """With an accelerator, the data loading runs beside it: unless set, one worker per CPU core available to this
    process (less one, at most 16) with persistent workers and pinned memory. Without one, the CPU trains the model
    too: the loading stays in the main process, and pinned memory is off."""
    if not has_accelerator():
        training_args.dataloader_pin_memory = False  # no effect without an accelerator, but a warning per run
        return
    if "dataloader_num_workers" not in given:
        if cpu_count is None:
            cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        per_process = max(1, cpu_count // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        training_args.dataloader_num_workers = min(16, max(1, per_process - 1))
    if "dataloader_persistent_workers" not in given and training_args.dataloader_num_workers > 0:
        training_args.dataloader_persistent_workers = True


def resolve_bundled(path: str) -> str:
    """A repository-relative path, found from the current directory or from the repository root."""
    return path if os.path.isdir(path) else str(REPO_ROOT / path)


def quiet(training_args: SmileTrainingArguments) -> bool:
    """Whether this process shows no progress bar: `--disable_tqdm`, or not the one that logs."""
    return bool(training_args.disable_tqdm) or not training_args.should_log


def has_accelerator() -> bool:
    return accelerator_available()


def run_processes_on_cpu_without_accelerator() -> None:
    """Several processes (torchrun, `accelerate launch --multi_gpu`) on a machine without an accelerator: tell the
    Trainer to run them on CPU with gloo; unless told, transformers leaves each process alone (world size 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def is_offline() -> bool:
    """Whether the Hugging Face Hub is switched off (`HF_HUB_OFFLINE=1`, read by huggingface_hub at import)."""
    return bool(hub_constants.HF_HUB_OFFLINE)


def dataset_download(data_args: DataTrainingArguments | None, cache_dir: str | None = None) -> str | None:
    """What to run to download the Hub dataset of `--dataset` when it is not in the `datasets` cache (offline
    only: a Hub preset cached by an earlier run loads offline), else None."""
    if data_args is None or data_args.dataset is None:
        return None
    preset = get_preset(data_args.dataset)
    if preset.hub_id is None:
        return None
    try:
        import datasets

        kwargs = {"name": preset.config_name, "data_dir": preset.data_dir, "revision": preset.revision}
        datasets.load_dataset_builder(preset.hub_id, cache_dir=cache_dir, **{k: v for k, v in kwargs.items() if v})
        return None
    except Exception:  # not cached (offline), or anything else: name it
        return f"the dataset {preset.hub_id} (`hf download --repo-type dataset {preset.hub_id}`)"


def check_model(model_args: ModelArguments, data_args: DataTrainingArguments | None = None) -> None:
    """Raise an [`InputError`] unless the checkpoint can be read and is an image classifier (config only). Offline,
    the error names everything the run would download: the model and, if not cached, the preset's dataset."""
    name = model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(
            name, cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
            trust_remote_code=model_args.trust_remote_code,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        if is_offline() and not os.path.isdir(name):
            missing = [f"the model {name} (`hf download {name}`)", dataset_download(data_args, model_args.cache_dir)]
            raise InputError(
                f"offline (HF_HUB_OFFLINE=1) and not in the local cache: download {' and '.join(filter(None, missing))} "
                "once online, or pass a local --model_name_or_path folder."
            ) from error
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


def prepare_data(
    data_args: DataTrainingArguments,
    model_args: ModelArguments,
    seed: int,
    processor,
    config: TransformConfig | None = None,
    disable_tqdm: bool = False,
) -> PreparedData:
    """Load and check the data of `data_args` and attach the transforms of `config` (default: read from the
    checkpoint's `processor` and `--crop_pct`); `disable_tqdm` hides the undecodable-image scan's progress bar."""
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
        disable_tqdm=disable_tqdm,
    )
    if config is None:
        config = TransformConfig.from_image_processor(processor, data_args.crop_pct, data_args.random_horizontal_flip)
    set_transforms(data, config, seed)
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
            # top-1 / top-5 / ECE through the evaluate module shipped in smile_hf (local path: works offline)
            compute_metrics=ClassificationMetrics(metric=load_classification_metric(keep_in_memory=True)),
            # saved with the model: what evaluation fed it (resize to crop / crop_pct, center crop, normalise)
            processing_class=eval_image_processor(data.transform_config) if data.transform_config else processor,
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
    card = card_arguments(model_args, training_args, data, from_scratch)
    trainer.create_model_card(**card)  # README.md beside the model, pushed or not (main process only)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    return {
        "label": label or training_args.method,
        "method": training_args.method,
        "from_scratch": from_scratch,
        "seed": training_args.seed,
        "model": model_args.model_name_or_path,
        "data": data.description,
        "data_source": asdict(data.source) if data.source else None,
        "num_labels": len(data.label_names),
        "num_train": len(data.train),
        "num_eval": len(data.eval),
        "world_size": training_args.world_size,
        "global_step": trainer.state.global_step,
        "train_runtime": train_result.metrics.get("train_runtime"),
        "metrics": metrics,
    }, trainer


def card_arguments(
    model_args: ModelArguments, training_args: SmileTrainingArguments, data: PreparedData, from_scratch: bool
) -> dict:
    """What the model card says beyond what the trainer knows: base model, license, the dataset (readable name, Hub
    id, configuration, revision, split evaluated on and what it is; local data by folder name only)."""
    source = data.source
    card = {
        "finetuned_from": None if from_scratch else model_args.model_name_or_path,
        "license": model_args.license or base_model_license(model_args),
        "tasks": "image-classification",
        "tags": ["image-classification", training_args.method],
    }
    if source is not None:
        card.update(
            dataset=source.name, dataset_tags=source.hub_id, dataset_args=source.config, dataset_split=source.eval_split,
            dataset_revision=source.revision, local_dataset=source.local,
            dataset_split_role=source.eval_split_role + ("" if source.official_split else " (not the official split)"),
        )  # fmt: skip
    return card


def base_model_license(model_args: ModelArguments) -> str | None:
    """The `license` of the base model's card: `README.md` of a local folder, else of the Hub repository (from the
    local cache when offline); `None` when there is no card or it names no license."""
    from huggingface_hub import ModelCard, hf_hub_download

    name = model_args.model_name_or_path
    try:
        path = os.path.join(name, "README.md")
        if not os.path.isdir(name):
            path = hf_hub_download(
                name, "README.md", revision=model_args.model_revision, cache_dir=model_args.cache_dir,
                token=model_args.token, local_files_only=is_offline(),
            )  # fmt: skip
        return ModelCard.load(path).data.license if os.path.isfile(path) else None
    except Exception:  # no card, unreachable, unparsable: no license claimed
        return None


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
# Without training (--do_train False): evaluate a trained model, classify a folder of images
# ---------------------------------------------------------------------------------------------------------------------


def load_trained_model(model_args: ModelArguments):
    """The image classifier of `--model_name_or_path` as it was saved (its own head and classes)."""
    try:
        return AutoModelForImageClassification.from_pretrained(model_args.model_name_or_path, **loading_kwargs(model_args))
    except (OSError, SafetensorError) as error:
        raise InputError(
            f"Cannot load the weights of --model_name_or_path '{model_args.model_name_or_path}': {one_line(error)}"
        ) from error


def check_classes(model, data: PreparedData) -> None:
    """Raise an [`InputError`] unless the model's classes (`config.id2label`, in order) are the data's."""
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != data.label_names:
        differ = [(i, a, b) for i, (a, b) in enumerate(zip(names, data.label_names)) if a != b][:3]
        raise InputError(
            f"The model has {len(names)} classes, the data {len(data.label_names)}, and they differ "
            f"(first (id, model, data): {differ}): evaluate on the data the model was trained for."
        )


def predict_folder(
    model, data_args: DataTrainingArguments, training_args: SmileTrainingArguments, config: TransformConfig
) -> str | None:
    """Classify the images of `--predict_dir` with `model` (the evaluation transform of `config`) and write
    `<output_dir>/predictions.csv`; return its path (main process only, `None` on the others)."""
    if not training_args.should_save:
        return None
    files = image_files(data_args.predict_dir)
    if not files:
        raise DataError(f"--predict_dir '{data_args.predict_dir}' contains no image files.")
    predictions = classify_files(
        model, files, ImageTransform(config, train=False), data_args.top_k, training_args.per_device_eval_batch_size,
        data_args.corrupt_images,
    )  # fmt: skip
    path = os.path.join(training_args.output_dir, PREDICTIONS_FILE)
    write_predictions(predictions, path, root=data_args.predict_dir)
    print(f"Predictions for {len(predictions)} images of {data_args.predict_dir}: {path}", flush=True)
    return path


def evaluate_and_predict(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> tuple[dict, Trainer | None]:
    """Without training: evaluate the trained model of `--model_name_or_path` on the validation data (`--do_eval`,
    the metrics a training run reports) and classify `--predict_dir` (`--do_predict`). The evaluation transform is
    the one the model was exported with ([`TransformConfig.for_evaluation`]). Writes `eval_results.json`; returns
    it and the evaluating trainer (`None` without `--do_eval`)."""
    check_model(model_args, data_args if training_args.do_eval else None)
    processor = load_processor(model_args)
    config = TransformConfig.for_evaluation(processor, data_args.crop_pct)
    model = load_trained_model(model_args).to(training_args.device)
    result, trainer = {"model": model_args.model_name_or_path, "metrics": {}}, None
    if training_args.do_eval:
        if data_args.dataset is None and data_args.train_dir is None:  # --validation_dir alone: its classes are all
            data_args = replace(data_args, train_dir=data_args.validation_dir)
        with training_args.main_process_first(desc="loading the datasets"):
            data = prepare_data(data_args, model_args, training_args.seed, processor, config, quiet(training_args))
        check_classes(model, data)
        trainer = Trainer(
            model=model, args=training_args, eval_dataset=data.eval, data_collator=collate,
            compute_metrics=ClassificationMetrics(metric=load_classification_metric(keep_in_memory=True)),
        )  # fmt: skip
        result.update(
            data=data.description, data_source=asdict(data.source) if data.source else None,
            num_eval=len(data.eval), metrics=trainer.evaluate(),
        )  # fmt: skip
    if training_args.do_predict:
        result["predictions"] = predict_folder(model, data_args, training_args, config)
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as f:
            json.dump(result, f, indent=2, default=str)
        if result["metrics"]:
            print(json.dumps(result["metrics"], indent=2), flush=True)
    return result, trainer


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
    default = " (the default; --model_name_or_path changes it)" if model_args.default_model_used else ""
    logger.info(f"Model: {model_args.model_name_or_path}{default}; output folder: {training_args.output_dir}")
    if not training_args.do_train:
        return evaluate_and_predict(model_args, data_args, training_args)
    check_model(model_args, data_args)
    processor = load_processor(model_args)
    with training_args.main_process_first(desc="loading the datasets"):
        data = prepare_data(data_args, model_args, training_args.seed, processor, disable_tqdm=quiet(training_args))
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
    if training_args.do_predict:  # the trained model on --predict_dir, with the evaluation transform it was exported with
        result["predictions"] = predict_folder(trainer.model, data_args, training_args, data.transform_config)
    if training_args.should_save:
        path = write_results([result], training_args.output_dir)
        print(f"\nResults ({data.description}, {len(data.eval)} eval images, model {model_args.model_name_or_path}):")
        print(results_table([result]))
        if data.source is not None and not data.source.official_split:
            print(f"Evaluated on {data.source.eval_split_role or data.source.eval_split}: not the benchmark's official split.")
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
    data = {k: v for k, v in asdict(data_args).items() if k not in ("predict_dir", "top_k")}  # not the weights'
    return json.loads(json.dumps(
        {"model": model, "data": data, "training": training_args.run_defining_values()}, default=str
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


def run_cli(main_fn, script: str) -> None:
    """Run a script's `main_fn`: bad input is one `<script>: error: ...` line (exit status 2), a diverged run one
    such line (exit status 1); with several processes every rank exits cleanly."""
    try:
        main_fn()
    except USER_ERRORS as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except RUN_ERRORS as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutdown()


def cli() -> None:
    run_cli(main, "run_smile.py")


if __name__ == "__main__":
    cli()
