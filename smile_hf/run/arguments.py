# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The arguments of a run: the model and data dataclasses beside [`SmileTrainingArguments`], their parsing (command
line, or one `.json` / `.yaml` file), and the defaults a run script fills in from the other arguments."""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from .._compat import accelerator_available
from ..config import SmileTrainingArguments
from ..data import CORRUPT_IMAGE_POLICIES, DATASET_PRESETS, get_preset
from ..sharding import check_sharding
from ..tuning import TuningArguments
from .help import argument_groups, group_help
from .recipes import apply_preset_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_CHECKPOINT = "checkpoints/fmnist-resnet-tiny"
"""Source checkpoint shipped in the repository (a tiny ResNet pre-trained on Fashion-MNIST): the default model of
the offline `--dataset digits` (and of the demo), never of real images."""
BUNDLED_TEXT_CHECKPOINT = "checkpoints/debian-bert-tiny"
"""Text source checkpoint shipped in the repository (a tiny BERT pre-trained on Debian package descriptions of 12
archive sections): the default model of the offline `--dataset debian_sections`."""
DEFAULT_TEXT_MODEL = "google-bert/bert-base-uncased"
"""The default `--model_name_or_path` for text presets of the Hub and `--train_file`."""
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


PREDICT_BACKENDS = ("pytorch", "onnx")
"""What `--predict_backend` may name: the PyTorch weights, or the ONNX export on ONNX Runtime."""


@dataclass
class DataTrainingArguments(TuningArguments):
    """What data to train and evaluate on (and, inherited, the validation split held out of it and the
    hyperparameter search on that split)."""

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
            "help": "Undecodable images: 'error' scans the training and validation splits before training and "
            "stops, naming the files; 'skip' drops them all (after a scan) and logs them.",
            "choices": list(CORRUPT_IMAGE_POLICIES),
        },
    )
    unlabeled_dir: str | None = field(
        default=None,
        metadata={"help": "A folder of unlabelled images of the domain (no class sub-folders, searched recursively) "
                  "for the methods that use them (smile, fixmatch, mean_teacher)."},
    )  # fmt: skip
    unlabeled_from_train: bool = field(
        default=False,
        metadata={"help": "Use the training images that --train_samples_per_class / --max_train_samples left out "
                  "(and no held-out validation image) as unlabelled images, their labels dropped."},
    )  # fmt: skip
    random_horizontal_flip: bool = field(default=True, metadata={"help": "Flip training images left-right."})
    crop_pct: float | None = field(
        default=None, metadata={"help": "Crop size / resize size (default: the processor's, else 224/256)."}
    )
    keep_aspect: bool = field(
        default=False,
        metadata={"help": "Resize the shorter side to the resize size, keeping the aspect ratio, then crop (the "
                  "reference's keep_aspect; default: squash to a square). The cub200 preset's with --reference_recipe."},
    )  # fmt: skip
    predict_dir: str | None = field(
        default=None,
        metadata={"help": "With --do_predict: a folder of images (searched recursively) to classify into "
                  "<output_dir>/predictions.csv (file, then the top-k labels and scores)."},
    )  # fmt: skip
    top_k: int = field(default=5, metadata={"help": "Labels and scores per image in predictions.csv."})
    predict_backend: str = field(
        default="pytorch",
        metadata={"help": "With --do_predict and --do_train False: what classifies --predict_dir. 'pytorch': the "
                  "model's weights; 'onnx': its ONNX export (--onnx_file, written by smile-hf export --format onnx) "
                  "on ONNX Runtime, through the same evaluation transform.", "choices": list(PREDICT_BACKENDS)},
    )  # fmt: skip
    onnx_file: str = field(
        default="model.onnx",
        metadata={"help": "With --predict_backend onnx: the ONNX file of --model_name_or_path (model.onnx, or "
                  "model.int8.onnx for the int8 copy)."},
    )  # fmt: skip
    train_file: str | None = field(
        default=None,
        metadata={"help": "Text classification: a CSV / TSV / JSON lines / Parquet file of training examples (instead "
                  "of --dataset), with a text column (or a pair) and a label column."},
    )  # fmt: skip
    validation_file: str | None = field(
        default=None, metadata={"help": "Text: the evaluation file (default: --train_val_split of --train_file)."}
    )
    predict_file: str | None = field(
        default=None,
        metadata={"help": "Text, with --do_predict: a file of texts (its text columns; labels not needed) to classify "
                  "into <output_dir>/predictions.csv."},
    )  # fmt: skip
    text_column_names: str | None = field(
        default=None,
        metadata={"help": "Text: the text column, or a pair separated by a comma (default: the preset's, else text, "
                  "sentence or sentence1[,sentence2])."},
    )  # fmt: skip
    label_column_name: str | None = field(
        default=None, metadata={"help": "Text: the label column (default: the preset's, else label)."}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Text: tokens per example after tokenization; longer texts are truncated."}
    )
    recipe = None  # set (on the instance) by smile_hf.run.recipes.apply_preset_recipe: an AppliedRecipe

    def dataset_kwargs(self, model_args: ModelArguments) -> dict:
        """The arguments of [`~smile_hf.data.prepare_datasets`] these data arguments (and the model's classes and
        cache of `model_args`) give: all but `seed` and the options of a validation split."""
        names = ("dataset", "train_dir", "validation_dir", "image_column", "label_column", "train_val_split",
                 "max_train_samples", "max_eval_samples", "train_samples_per_class", "corrupt_images")  # fmt: skip
        return {**{name: getattr(self, name) for name in names}, "num_labels": model_args.num_labels,
                "cache_dir": model_args.cache_dir, "token": model_args.token}  # fmt: skip

    def is_text(self) -> bool:
        """Whether these arguments name text data: `--train_file`, `--validation_file`, `--predict_file`, or a text
        preset."""
        if self.train_file or self.validation_file or self.predict_file:
            return True
        return self.dataset is not None and get_preset(self.dataset).is_text

    def text_dataset_kwargs(self, model_args: ModelArguments) -> dict:
        """The arguments of [`~smile_hf.data.prepare_text_datasets`] (all but `seed` and the validation split's)."""
        names = ("dataset", "train_file", "validation_file", "text_column_names", "train_val_split",
                 "max_train_samples", "max_eval_samples", "train_samples_per_class")  # fmt: skip
        return {**{name: getattr(self, name) for name in names}, "label_column_name": self.label_column_name
                or self.label_column, "num_labels": model_args.num_labels, "cache_dir": model_args.cache_dir,
                "token": model_args.token}  # fmt: skip


TEXT_ONLY_FIELDS = ("train_file", "validation_file", "predict_file", "text_column_names", "label_column_name",
                    "max_seq_length")  # fmt: skip
"""The [`DataTrainingArguments`] only a text run reads."""
IMAGE_ONLY_FIELDS = ("train_dir", "validation_dir", "predict_dir", "image_column", "corrupt_images",
                     "random_horizontal_flip", "crop_pct", "keep_aspect", "unlabeled_dir", "unlabeled_from_train",
                     "predict_backend", "onnx_file")  # fmt: skip
"""The [`DataTrainingArguments`] only an image run reads."""


DRIVER_ONLY_OPTIONS = frozenset(
    {"do_predict", "predict_dir", "predict_file", "top_k", "predict_backend", "onnx_file", "calibration",
     *(f.name for f in fields(TuningArguments))}
)
"""The options of a run that only the driver (`smile-hf train`) acts on: classifying a folder, calibrating, the
hyperparameter search and the validation split it holds out. A script of its own that does none of this refuses
them."""


INTERNAL_FIELDS = ("reference_recipe_applied",)
"""Fields of [`SmileTrainingArguments`] that a run records itself (in `training_args.json`): hidden from `--help`
and refused on the command line."""


class InputError(ValueError):
    """Bad command-line input found before training (one line, shown as is)."""


RUN_DESCRIPTION = """\
Fine-tune an image classifier (any AutoModelForImageClassification checkpoint) on a target dataset with SMILE or a
transfer-learning baseline: one run. It trains, evaluates, saves, writes the model card and results.json into
--output_dir, and pushes to the Hub with --push_to_hub; rerun with the same arguments, it resumes from its last
checkpoint. Arguments can also come from one .json / .yaml file: smile-hf train args.json.

examples:
  smile-hf train --dataset food101
  smile-hf train --dataset digits --train_samples_per_class 10 --method smile
  smile-hf train --train_dir data/train --validation_dir data/val --method l2sp+mixup
  smile-hf train --do_train False --do_eval --dataset digits --model_name_or_path runs/m"""


def build_parser(prog: str | None = None) -> HfArgumentParser:
    """The parser of one run: [`ModelArguments`], [`DataTrainingArguments`], [`SmileTrainingArguments`], with a
    grouped `--help` ([`group_help`])."""
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, SmileTrainingArguments), prog=prog, description=RUN_DESCRIPTION,
        usage="%(prog)s (--dataset NAME | --train_dir DIR) [OPTION ...]\n       %(prog)s ARGS.json | ARGS.yaml",
    )
    groups = {"model": ModelArguments, "data": DataTrainingArguments, "tuning": TuningArguments}
    return group_help(parser, argument_groups(groups), hidden=INTERNAL_FIELDS)


def read_args(parser: HfArgumentParser, argv: list[str]) -> tuple:
    """Parse the command line, or a single `.json` / `.yaml` file of arguments, into `parser`'s dataclasses. An
    internal field ([`INTERNAL_FIELDS`]) on the command line, and a sharded or `nn.DataParallel` training
    ([`check_sharding`]), are a `ValueError`, before anything loads."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        parsed = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    elif len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        parsed = parser.parse_yaml_file(yaml_file=os.path.abspath(argv[0]))
    else:
        parsed = parser.parse_args_into_dataclasses(args=argv)  # (--help: prints it and exits)
        internal = [f"--{name}" for name in INTERNAL_FIELDS if name in given_options(argv)]
        if internal:
            raise InputError(f"{internal[0]} is recorded by a run itself, not an option: drop it.")
    for args in parsed:
        if isinstance(args, SmileTrainingArguments):
            check_sharding(args)
    return parsed


def parse_args(
    argv: list[str], prog: str | None = None
) -> tuple[ModelArguments, DataTrainingArguments, SmileTrainingArguments]:
    """Parse the command line, or a single `.json` / `.yaml` file of arguments; no argument is an [`InputError`]."""
    if not argv:
        raise InputError(
            "no arguments: pass --dataset NAME (a preset) or --train_dir DIR (your own image folders), or a .json / "
            ".yaml file of arguments; --help lists every option. The offline demo is examples/compare_methods.py."
        )
    try:
        model_args, data_args, training_args = read_args(build_parser(prog), argv)
    except ValueError as error:  # raised by the arguments' own checks (unknown method, a negative weight...)
        raise InputError(" ".join(str(error).split())) from error
    given = given_options(argv, build_parser(prog))
    check_modality_options(data_args, given)
    training_args = apply_defaults(model_args, data_args, training_args, given)
    check_inference_args(model_args, data_args, training_args)
    return model_args, data_args, training_args


def apply_defaults(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: SmileTrainingArguments,
    given: set[str] | frozenset[str],
) -> SmileTrainingArguments:
    """The defaults of a run that its parser cannot give, each only where `given` (the options set explicitly:
    [`given_options`]) names nothing: the recipe of the `--dataset` preset ([`apply_preset_recipe`]; an unknown
    preset is a `DataError`), then the defaults that depend on other arguments ([`finalize_args`]). Returns the
    training arguments (rebuilt when the recipe changes one)."""
    training_args = apply_preset_recipe(data_args, training_args, given)
    finalize_args(model_args, training_args, data_args, given)
    return training_args


def check_modality_options(data_args: DataTrainingArguments, given: set[str] | frozenset[str]) -> None:
    """An [`InputError`] for an option of text data given with image data, or the reverse: it would be ignored."""
    text = data_args.is_text()
    unread = sorted(given & set(IMAGE_ONLY_FIELDS if text else TEXT_ONLY_FIELDS))
    if unread:
        kind, other = ("text", "image") if text else ("image", "text")
        raise InputError(
            f"{', '.join('--' + n for n in unread)}: read for {other} data only, and these data are {kind} "
            f"({'--train_file / a text preset' if text else '--train_dir / an image preset'}): drop "
            f"{'it' if len(unread) == 1 else 'them'}."
        )


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
    if not training_args.do_train and training_args.calibration != "none":
        raise InputError("--calibration calibrates a model after training: use it with training (--do_train True).")
    if data_args.predict_file and not training_args.do_predict:
        raise InputError("--predict_file is read with --do_predict only: add --do_predict (or drop --predict_file).")
    if training_args.do_predict and data_args.predict_file is not None:
        if not os.path.isfile(data_args.predict_file):
            raise InputError(f"--predict_file '{data_args.predict_file}' does not exist or is not a file.")
    elif data_args.predict_dir and not training_args.do_predict:
        raise InputError("--predict_dir is read with --do_predict only: add --do_predict (or drop --predict_dir).")
    elif training_args.do_predict and not (data_args.predict_dir and os.path.isdir(data_args.predict_dir)):
        raise InputError(f"--do_predict needs --predict_dir, an existing folder of images (got {data_args.predict_dir}).")
    if data_args.top_k < 1:
        raise InputError(f"--top_k must be >= 1, got {data_args.top_k}.")
    check_predict_backend(data_args, training_args)


def check_predict_backend(data_args: DataTrainingArguments, training_args: SmileTrainingArguments) -> None:
    """Raise an [`InputError`] unless `--predict_backend onnx` (and `--onnx_file`) can take effect: classifying
    `--predict_dir` (`--do_predict`) with an exported model (`--do_train False`), without `--do_eval` (which
    evaluates the PyTorch model)."""
    if data_args.predict_backend != "onnx":
        if data_args.onnx_file != "model.onnx":
            raise InputError("--onnx_file is read with --predict_backend onnx only: add it (or drop --onnx_file).")
        return
    if training_args.do_train or not training_args.do_predict or training_args.do_eval:
        raise InputError(
            "--predict_backend onnx classifies --predict_dir with the ONNX export of a trained model: run it with "
            "--do_train False --do_predict (and without --do_eval, which evaluates the PyTorch model), after "
            "smile-hf export MODEL_DIR --format onnx."
        )


def redact_tokens(argv: list[str] | tuple[str, ...]) -> list[str]:
    """`argv` with the value of every token option (`--token`, `--hub_token`, their abbreviations, `--opt=value`
    too) replaced by `<TOKEN>`: a command line that can be shown or written down."""
    redacted, hide_next = [], False
    for arg in argv:
        option, sep, _ = arg.partition("=")
        is_token_option = option.startswith("--") and "tok" in option
        if hide_next:
            redacted.append("<TOKEN>")
        elif is_token_option and sep:
            redacted.append(f"{option}=<TOKEN>")
        else:
            redacted.append(arg)
        hide_next = is_token_option and not sep and not hide_next
    return redacted


def given_options(argv: list[str], parser: HfArgumentParser | None = None) -> set[str]:
    """The names of the arguments set explicitly: those a command line sets, as `parser` (default: a fresh
    [`build_parser`]) reads it (spelt with dashes, abbreviated, `--no_<name>`...), or the keys of a single `.json` /
    `.yaml` file of arguments. `parser` is changed: pass a fresh one."""
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        import yaml  # JSON is YAML

        with open(argv[0], encoding="utf-8") as f:
            return set(yaml.safe_load(f) or {})
    parser = build_parser() if parser is None else parser
    for action in parser._actions:  # the namespace then holds only what argv sets
        action.default = argparse.SUPPRESS
    namespace, _ = parser.parse_known_args(argv)
    return set(vars(namespace))


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
    """The bundled toy checkpoint for a preset built offline (`--dataset digits`; the tiny BERT for the text one,
    `--dataset debian_sections`), else [`DEFAULT_MODEL`] ([`DEFAULT_TEXT_MODEL`] for text data)."""
    text = data_args is not None and data_args.is_text()
    if data_args is not None and data_args.dataset is not None and get_preset(data_args.dataset).hub_id is None:
        return resolve_bundled(BUNDLED_TEXT_CHECKPOINT if text else BUNDLED_CHECKPOINT)
    return DEFAULT_TEXT_MODEL if text else DEFAULT_MODEL


def default_output_dir(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> str:
    """`runs/<dataset>-<method>-<model>`: the preset (or the `--train_dir` / `--validation_dir` / `--predict_dir`
    folder's name), the method (`predict` without training), the last part of the model's name or path."""
    folder = data_args.train_dir or data_args.validation_dir or data_args.predict_dir
    text_file = data_args.train_file or data_args.validation_file or data_args.predict_file
    if folder is None and text_file is not None:  # a text file's name, without its extension
        folder = os.path.splitext(text_file)[0]
    dataset = data_args.dataset or os.path.basename(os.path.normpath(folder or "data"))
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
        cpu_count = available_cpu_count() if cpu_count is None else cpu_count
        per_process = max(1, cpu_count // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        training_args.dataloader_num_workers = min(16, max(1, per_process - 1))
    if "dataloader_persistent_workers" not in given and training_args.dataloader_num_workers > 0:
        training_args.dataloader_persistent_workers = True


def available_cpu_count() -> int:
    """The CPU cores this process may run on (its affinity where the platform tells it, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_bundled(path: str) -> str:
    """A repository-relative path, found from the current directory or from the repository root."""
    return path if os.path.isdir(path) else str(REPO_ROOT / path)


def quiet(training_args: SmileTrainingArguments) -> bool:
    """Whether this process shows no progress bar: `--disable_tqdm`, or not the one that logs."""
    return bool(training_args.disable_tqdm) or not training_args.should_log


def has_accelerator() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU...)."""
    return accelerator_available()


def run_processes_on_cpu_without_accelerator() -> None:
    """Several processes (torchrun, `accelerate launch --multi_gpu`) on a machine without an accelerator: tell the
    Trainer to run them on CPU with gloo; unless told, transformers leaves each process alone (world size 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
