# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Model cards for models trained with [`SmileTrainer`]: a leaf module, importing nothing from smile_hf.

[`build_model_card`] fills the Jinja template shipped in the package (`smile_hf/templates/model_card.md`, linked from
`model_cards/template.md`) and a `huggingface_hub.ModelCardData` whose `eval_results` become the Hub's `model-index`
metadata. [`model_card_from_trainer`] collects what a trainer knows (evaluation results and loss terms from
`state.log_history`, base model, dataset, labels, training arguments); what belongs to the method (its title,
description, hyperparameters and the paper to cite) is passed in by the caller, `SmileTrainer.create_model_card`,
and so is the modality: an image or a text classifier ([`MODALITIES`]: the task, the auto class, the usage example
and the card's words for the inputs). Nothing here touches the network (unlike transformers' `TrainingSummary`, which looks the base model up on the Hub).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
"""The card template shipped in the package (`model_cards/template.md` of the source tree links to it); pass
`template_path=` for another one."""



@dataclass(frozen=True)
class CardModality:
    """What a card says differently of an image and of a text classifier.

    Attributes:
        task: the Hub task (`pipeline_tag`, `model-index` task type, `pipeline()` task).
        task_name: its readable name in `model-index`.
        auto_class: the `transformers` auto class that loads the model.
        processor: what the folder holds besides the model to prepare inputs, in words.
        item / items: one input, and several (`"image"`, `"images"`).
        classifier: the model in words (`"an image classifier"`).
        usage_input: the argument of the usage example's call of the pipeline (Python source).
        shift: what changes between distributions of such inputs, for the limitations.
        local_data: local files of such inputs, in words.
        local_name: what follows a local dataset's name (`"my_data (local image folder)"`).
        intended_use: the card's default "Intended uses" paragraph.
        method_note: what follows the method's description (which speaks of images) for these inputs.
    """

    task: str
    task_name: str
    auto_class: str
    processor: str
    item: str
    items: str
    classifier: str
    usage_input: str
    shift: str
    local_data: str
    local_name: str
    intended_use: str
    method_note: str = ""


MODALITIES = {
    "image": CardModality(
        task="image-classification", task_name="Image Classification", auto_class="AutoModelForImageClassification",
        processor="image processor", item="image", items="images", classifier="an image classifier",
        usage_input='"path/or/url/to/image.jpg"', shift="camera, resolution, background",
        local_data="local image files", local_name="local image folder",
        intended_use="Classifying images into the classes of the fine-tuning dataset, for the same kind of images as "
        "those it was trained on, and as a starting point for further fine-tuning.",
    ),
    "text": CardModality(
        task="text-classification", task_name="Text Classification", auto_class="AutoModelForSequenceClassification",
        processor="tokenizer", item="text", items="texts", classifier="a text classifier",
        usage_input='"A text to classify."', shift="domain, vocabulary, style, language, length",
        local_data="local text files", local_name="local file",
        intended_use="Classifying texts into the classes of the fine-tuning dataset, for the same kind of texts as "
        "those it was trained on, and as a starting point for further fine-tuning.",
        method_note="This model classifies texts: where the description above speaks of images and feature maps, "
        "read the token embeddings (a mixed pair attends to the union of its two attention masks) and the last "
        "hidden states over the tokens either mask keeps.",
    ),
}  # fmt: skip
"""The card's words for each modality (`build_model_card(modality=...)`): image or text classification."""


def card_modality(modality: str) -> CardModality:
    """The [`CardModality`] of `"image"` or `"text"`; anything else is a `ValueError`."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}.")
    return MODALITIES[modality]


def library_tags(modality: str = "image") -> tuple[str, ...]:
    """The tags every card of `modality` has."""
    return ("smile_hf", card_modality(modality).task, "transfer-learning")

TRAINING_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
    "optim", "optim_args", "weight_decay", "max_grad_norm", "lr_scheduler_type", "warmup_steps", "lr_step_fraction",
    "lr_step_gamma", "num_train_epochs", "max_steps", "seed", "reference_recipe",
)  # fmt: skip

_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "epoch", "step", "jit_compilation_time"}
NOT_RESULTS = ("loss", "num_samples")
"""Evaluation values that are not results of the model: never in `model-index` or the card's results."""
HUB_METRIC_IDS = frozenset({"accuracy", "f1", "precision", "recall", "roc_auc", "matthews_correlation"})
"""Metric ids of the Hub (huggingface.co/metrics) that the card's top-level `metrics:` may list."""
_TOP_K = re.compile(r"^top(\d+)_accuracy$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# ---- what goes into the card --------------------------------------------------------------------------------------


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(getattr(value, "value", value))


def training_hyperparameters(args) -> dict[str, Any]:
    """The optimisation arguments of a run, with the total batch size."""
    values = {name: getattr(args, name) for name in TRAINING_HYPERPARAMETERS if hasattr(args, name)}
    if values.get("max_steps", -1) > 0:
        values.pop("num_train_epochs", None)
    else:
        values.pop("max_steps", None)
    if values.get("lr_step_fraction") is None:
        values.pop("lr_step_fraction", None)
        values.pop("lr_step_gamma", None)
    if not values.get("optim_args"):
        values.pop("optim_args", None)
    world_size = getattr(args, "world_size", 1)
    values["total_train_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size
    if world_size > 1:
        values["num_processes"] = world_size
    precision = "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else None
    if precision:
        values["mixed_precision"] = precision
    return values


@dataclass
class TrainingResults:
    """What a run's `log_history` says about it.

    Attributes:
        eval_metrics: the last evaluation, `eval_` prefix removed (`{"accuracy": 0.9, "loss": 0.3}`).
        eval_step: the step of that evaluation.
        loss_terms: each `loss_<term>` -> (last logged value, step).
        history_columns / history_rows: one row per evaluation (step, epoch, last training loss, metrics).
        calibration: the last temperature scaling (`calibration_<name>` entries, prefix removed: `temperature`,
            `nll_before`, `nll_after`, `ece_before`, `ece_after`, `num_samples`), empty without one.
    """

    eval_metrics: dict[str, float] = field(default_factory=dict)
    eval_step: int | None = None
    loss_terms: dict[str, tuple[float, int]] = field(default_factory=dict)
    history_columns: list[str] = field(default_factory=list)
    history_rows: list[list[str]] = field(default_factory=list)
    calibration: dict[str, float] = field(default_factory=dict)


def _is_loss_term(name: str) -> bool:
    """Whether an evaluation metric (`eval_` prefix removed) is a loss term of the method (`loss_aux`, or
    `held_loss_aux` for a named evaluation set), which the card's results leave out."""
    return name.startswith("loss_") or "_loss_" in name


def _eval_metrics(entry: dict) -> dict[str, float]:
    """The metrics of an evaluation log entry, `eval_` prefix removed, the loss last (the method's loss terms left
    out: `eval_loss_main`... are in the run's logs)."""
    metrics = {
        key[len("eval_") :]: value
        for key, value in entry.items()
        if key.startswith("eval_") and key[len("eval_") :] not in _NOT_METRICS and isinstance(value, (int, float))
        and not _is_loss_term(key[len("eval_") :])
    }
    return dict(sorted(metrics.items(), key=lambda item: item[0] == "loss"))


def training_results(log_history: Iterable[dict]) -> TrainingResults:
    """Summarise a `TrainerState.log_history`: last evaluation, last value of each loss term, evaluation history."""
    results = TrainingResults()
    history, last_train_loss, metric_names = [], None, []
    for entry in log_history:
        step = entry.get("step")
        if "loss" in entry:
            last_train_loss = entry["loss"]
        for key, value in entry.items():
            if key.startswith("loss_") and isinstance(value, (int, float)):
                results.loss_terms[key] = (value, step)
        if "calibration_temperature" in entry:
            results.calibration = {k[len("calibration_") :]: v for k, v in entry.items() if k.startswith("calibration_")}
        metrics = _eval_metrics(entry)
        if metrics:
            results.eval_metrics, results.eval_step = metrics, step
            history.append((step, entry.get("epoch"), last_train_loss, metrics))
            metric_names += [name for name in metrics if name not in metric_names]
    if history:
        results.history_columns = ["Step", "Epoch", "Training loss", *(f"Validation {n}" for n in metric_names)]
        for step, epoch, train_loss, metrics in history:
            cells = [step, epoch, train_loss if train_loss is not None else "-"]
            cells += [metrics.get(n, "-") for n in metric_names]
            results.history_rows.append([_format(c) for c in cells])
    return results


def _framework_versions() -> list[tuple[str, str]]:
    import importlib.metadata

    versions = []
    for package in ("smile_hf", "transformers", "torch", "datasets", "accelerate"):
        try:
            versions.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def hub_base_model(name_or_path: str | None) -> str | None:
    """`name_or_path` if it can be a Hub repo id (and is not a local folder), else None."""
    if not name_or_path or os.path.exists(name_or_path) or not _HUB_ID.match(name_or_path):
        return None
    return name_or_path


def metric_type_and_name(metric: str) -> tuple[str, str]:
    """The `model-index` type and readable name of a metric of [`ClassificationMetrics`] (`accuracy` is top-1;
    `top5_accuracy` -> `top_5_accuracy`, "Top-5 accuracy"; `ece` -> "Expected calibration error"); other metrics
    keep their key."""
    if metric == "accuracy":
        return "accuracy", "Top-1 accuracy"
    if match := _TOP_K.match(metric):
        return f"top_{match.group(1)}_accuracy", f"Top-{match.group(1)} accuracy"
    if metric == "ece":
        return "ece", "Expected calibration error"
    return metric, metric.replace("_", " ").capitalize()


def public_name(value: str | None) -> str | None:
    """`value` without its local folders: a path (absolute, or an existing file or folder) becomes its last part, so
    that no local path reaches a card."""
    if value and (os.path.isabs(value) or os.path.exists(value) or value.startswith(("./", "../", "~"))):
        return os.path.basename(os.path.normpath(os.path.expanduser(value)))
    return value


def is_hub_id(value: str | None) -> bool:
    """Whether `value` has the form of a Hub repository id (`name` or `owner/name`: letters, digits, `-`, `_`, `.`),
    so that it can go into `datasets:` metadata and a `huggingface.co/datasets/...` link; a readable name such as
    "scikit-learn digits" (a dataset built offline, on no Hub repository) or a local path cannot."""
    if not value or value != public_name(value):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _eval_subset(examples: int | None, of: int | None, items: str = "images") -> str | None:
    """How many inputs (`items`) the results are on, for the card's text: `"300 of its 899 images, drawn at
    random"`, or `"all its 899 images"`."""
    if not examples:
        return None
    if of and examples < of:
        return f"{examples} of its {of} {items}, drawn at random"
    return f"all its {examples} {items}"


def _train_subset(per_class: int | None, items: str = "images") -> str | None:
    """The few-shot training subset in words: `"5 images per class (a few-shot subset)"`."""
    return f"{per_class} {items} per class (a few-shot subset)" if per_class else None


_LOCAL_FILE_TYPES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _local_dataset_type(name: str | None, modality: str) -> str:
    """The `model-index` dataset type of local data: the `datasets` builder that reads them (`imagefolder` for image
    folders; `csv`, `json` or `parquet` by a text file's extension)."""
    if modality == "image":
        return "imagefolder"
    return _LOCAL_FILE_TYPES.get(os.path.splitext(name or "")[1].lower(), "text")


def build_model_card(
    *,
    model_name: str,
    method: str,
    method_title: str | None = None,
    method_description: str = "",
    method_hyperparameters: dict[str, Any] | None = None,
    method_paper: str | None = None,
    training_hyperparameters: dict[str, Any] | None = None,
    training_recipe: str | None = None,
    results: TrainingResults | None = None,
    base_model: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    dataset_split: str = "validation",
    dataset_revision: str | None = None,
    dataset_split_role: str | None = None,
    local_dataset: bool = False,
    eval_examples: int | None = None,
    eval_split_examples: int | None = None,
    train_samples_per_class: int | None = None,
    unlabeled_images: str | None = None,
    validation_split: str | None = None,
    hyperparameter_search: str | None = None,
    labels: Sequence[str] | None = None,
    modality: str = "image",
    architecture: str | None = None,
    repo_id: str | None = None,
    tags: Sequence[str] = (),
    license: str | None = None,
    language: str | list[str] | None = None,
    intended_use: str | None = None,
    limitations: Sequence[str] = (),
    citation: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a model trained with smile_hf.

    The metadata (`ModelCardData`) has the base model (when it is a Hub id), the dataset, the tags, and one
    `EvalResult` per metric of the last evaluation in `results`, serialised by `huggingface_hub` as `model-index`.

    Args:
        model_name: name of the model (the Hub repo name).
        method: the `SmileTrainingArguments.method` string (also a tag).
        method_title / method_description: the method's readable name (default: `method`) and its paragraph.
        method_hyperparameters / training_hyperparameters: tables of the card (name -> value).
        training_recipe: where the training values come from (a run script's dataset recipe), above their table.
        results: evaluation results and loss terms (see [`training_results`]).
        base_model: the pre-trained checkpoint fine-tuned: a Hub id goes into the metadata; of a local folder, only
            its name is shown.
        dataset_id: the dataset's Hub id (`datasets` metadata and `dataset_type` of the results).
        dataset_name / dataset_config / dataset_split / dataset_revision: how the dataset is named in the results
            (`dataset_split` as the source names it; a local path is reduced to its last part).
        dataset_split_role: what that split is (e.g. "the official test split"), said in the card's text.
        local_dataset: the data are local files, not a Hub dataset (named by folder or file name, `dataset_type` is
            `imagefolder`, or `csv` / `json` / `parquet` for text files; no `datasets` metadata).
        eval_examples / eval_split_examples: the examples evaluated on, and the examples of the evaluation split
            they were drawn from (`--max_eval_samples`): the card says how many were used, and of how many.
        train_samples_per_class: the training examples per class of a few-shot run (`--train_samples_per_class`).
        unlabeled_images: the unlabelled images trained on, how many and from where
            ([`smile_hf.unlabeled.describe_unlabeled`]).
        validation_split: the validation split (search, calibration) in words, and whether the model trained on it.
        hyperparameter_search: the hyperparameter search whose best values were trained with, in words.
        labels: the class names, in label id order.
        modality: `"image"` or `"text"` (see [`MODALITIES`]): the task (`image-classification`,
            `text-classification`), the auto class, the usage example and the card's words for the inputs.
        architecture: the model's class (default: the modality's auto class).
        citation: BibTeX of the paper to cite (the card has no citation section without it).
        template_path: a Jinja template; defaults to `model_cards/template.md`.
    """
    kind = card_modality(modality)
    results = results or TrainingResults()
    hub_model = hub_base_model(base_model)
    dataset_ids = [] if local_dataset else [d for d in _as_list(dataset_id) if is_hub_id(d)]
    local_dataset = local_dataset or any(d != public_name(d) for d in _as_list(dataset_id))  # a path given as id
    name = public_name(dataset_name) or public_name(dataset_ids[0] if dataset_ids else dataset_id)
    local_type = _local_dataset_type(name, modality)  # of the file's name, before it is marked local
    if local_dataset and name:
        name = f"{name} ({kind.local_name})" if "local" not in name else name
    scores = {k: v for k, v in results.eval_metrics.items() if k not in NOT_RESULTS}
    dataset_type = dataset_ids[0] if dataset_ids else (name or "custom")
    if local_dataset and not dataset_ids:
        dataset_type = local_type
    eval_results = [
        EvalResult(
            task_type=kind.task,
            task_name=kind.task_name,
            dataset_type=dataset_type,
            dataset_name=name or "custom",
            dataset_config=dataset_config,
            dataset_split=dataset_split,
            dataset_revision=dataset_revision,
            metric_type=metric_type_and_name(metric)[0],
            metric_name=metric_type_and_name(metric)[1],
            metric_value=float(value),
        )
        for metric, value in scores.items()
    ]
    all_tags = list(dict.fromkeys([*library_tags(modality), *_as_list(tags), method.replace("+", "-")]))
    card_data = ModelCardData(
        model_name=model_name,
        base_model=hub_model,
        datasets=dataset_ids or None,
        library_name="transformers",
        pipeline_tag=kind.task,
        license=license,
        language=language,
        tags=all_tags,
        metrics=[m for m in scores if m in HUB_METRIC_IDS] or None,
        eval_results=eval_results or None,
    )
    labels = list(labels or [])
    preview = ", ".join(labels[:10]) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
    template_path = Path(template_path or DEFAULT_TEMPLATE_PATH)
    if not template_path.is_file():
        raise FileNotFoundError(
            f"Model card template {template_path} not found: pass `template_path=` (the default is "
            "smile_hf/templates/model_card.md, linked from model_cards/template.md)."
        )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        base_model=hub_model or (os.path.basename(os.path.normpath(base_model)) if base_model else None),
        base_model_url=f"https://huggingface.co/{hub_model}" if hub_model else None,
        dataset_name=name,
        dataset_config=dataset_config,
        dataset_split=dataset_split,
        dataset_split_role=dataset_split_role,
        dataset_revision=dataset_revision,
        dataset_id=dataset_ids[0] if dataset_ids else None,
        local_dataset=local_dataset,
        eval_subset=_eval_subset(eval_examples, eval_split_examples, kind.items),
        train_subset=_train_subset(train_samples_per_class, kind.items),
        validation_split=validation_split,
        unlabeled_images=unlabeled_images,
        hyperparameter_search=hyperparameter_search,
        num_labels=len(labels) if labels else "its",
        labels_preview=preview if labels else None,
        method_title=method_title or method,
        method_description=method_description,
        method_paper=method_paper,
        kind=kind,
        architecture=architecture or kind.auto_class,
        repo_id=repo_id or model_name,
        eval_metrics=[(metric_type_and_name(k)[1], _format(v)) for k, v in scores.items()],
        eval_step=results.eval_step,
        loss_terms=[(k, _format(v), s) for k, (v, s) in results.loss_terms.items()],
        history_columns=results.history_columns,
        history_rows=results.history_rows,
        calibration={k: _format(v) for k, v in results.calibration.items()},
        calibration_ece={k: f"{100 * results.calibration[k]:.2f}%" for k in ("ece_before", "ece_after")
                         if k in results.calibration},  # fmt: skip
        method_hyperparameters=[(k, _format(v)) for k, v in (method_hyperparameters or {}).items()],
        training_hyperparameters=[(k, _format(v)) for k, v in (training_hyperparameters or {}).items()],
        training_recipe=training_recipe,
        intended_use=intended_use or kind.intended_use,
        limitations=list(limitations),
        framework_versions=_framework_versions(),
        citation=citation,
    )


def _split_name(dataset) -> str | None:
    split = getattr(dataset, "split", None)
    return str(split) if split else None


def model_card_from_trainer(
    trainer,
    *,
    model,
    method_title: str,
    method_description: str = "",
    method_hyperparameters: dict[str, Any] | None = None,
    method_paper: str | None = None,
    citation: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
    model_name: str | None = None,
    finetuned_from: str | None = None,
    tasks: str | list[str] | None = None,
    dataset_tags: str | list[str] | None = None,
    dataset: str | list[str] | None = None,
    dataset_args: str | list[str] | None = None,
    template_path: str | os.PathLike | None = None,
    modality: str = "image",
    unlabeled_images: str | None = None,
    **dataset_details: Any,
) -> ModelCard:
    """The card of a trained model.

    Args:
        trainer: a `transformers.Trainer` (read: `args`, `state.log_history`, `eval_dataset`, `hub_model_id`,
            `_tag_names`).
        model: the trained model, unwrapped (its `config` gives the labels, its class the architecture).
        method_title / method_description / method_hyperparameters / method_paper / citation: what the caller's
            method says of itself (see [`build_model_card`]).
        The other arguments are those of `Trainer.create_model_card`: `finetuned_from` defaults to the model's
        `name_or_path`, `dataset_tags` (Hub ids) to `dataset`; `tasks`, when given, must be the modality's task.
        modality: `"image"` or `"text"`, what the model classifies (see [`build_model_card`]).
        unlabeled_images: the unlabelled images trained on, in words (see [`build_model_card`]).
        dataset_details: `dataset_split`, `dataset_revision`, `dataset_split_role`, `local_dataset`,
            `training_recipe`, `unlabeled_images` of [`build_model_card`] (default split: the evaluation dataset's
            `split`, else "validation").
    """
    args = trainer.args
    config = model.config
    if model_name is None:
        model_name = (args.hub_model_id or Path(args.output_dir).name).split("/")[-1]
    task = card_modality(modality).task
    if tasks is not None and task not in _as_list(tasks):
        what = card_modality(modality).classifier
        raise ValueError(f"This model is {what}: `tasks` must be '{task}', got {tasks!r}.")
    dataset_ids = _as_list(dataset_tags) or [d for d in _as_list(dataset) if is_hub_id(d)]  # a name is no Hub id
    dataset_names = _as_list(dataset)
    configs = _as_list(dataset_args)
    labels = [config.id2label[i] for i in range(config.num_labels)] if getattr(config, "id2label", None) else None
    return build_model_card(
        model_name=model_name,
        method=args.method,
        method_title=method_title,
        method_description=method_description,
        method_hyperparameters=method_hyperparameters,
        method_paper=method_paper,
        training_hyperparameters=training_hyperparameters(args),
        results=training_results(trainer.state.log_history),
        base_model=finetuned_from or getattr(model, "name_or_path", None) or None,
        dataset_id=dataset_ids[0] if dataset_ids else None,
        dataset_name=dataset_names[0] if dataset_names else None,
        dataset_config=configs[0] if configs else None,
        dataset_split=dataset_details.pop("dataset_split", None) or _split_name(trainer.eval_dataset) or "validation",
        labels=labels,
        architecture=type(model).__name__,
        repo_id=getattr(trainer, "hub_model_id", None) or args.hub_model_id,
        tags=[*_as_list(tags), *_as_list(getattr(trainer, "_tag_names", None))],
        license=license,
        language=language,
        citation=citation,
        template_path=template_path,
        modality=modality,
        unlabeled_images=unlabeled_images,
        **dataset_details,
    )


# ---- sections added after training ----------------------------------------------------------------------------------

ONNX_CARD_SECTION = "onnx"
"""Name of the card section that lists the ONNX files of the folder (see [`onnx_card_section`])."""


def onnx_card_section(files: dict[str, str]) -> str:
    """The card section of a folder holding ONNX exports: `files` maps each file name to what it is (the first is
    the one the examples run). Says which files are there and how to run them with ONNX Runtime, through the
    folder's image processor."""
    lines = [f"- `{name}`: {what}" for name, what in files.items()]
    first = next(iter(files))
    return "\n".join([
        "## ONNX",
        "",
        "Besides the PyTorch weights (`model.safetensors`, `config.json`) and the image processor "
        "(`preprocessor_config.json`), this folder holds ONNX graphs of the same model (input `pixel_values`, "
        "any batch size; output `logits`):",
        "",
        *lines,
        "",
        "```python",
        "from smile_hf.onnx_export import OnnxImageClassifier  # pip install \"smile_hf[onnx]\"",
        "",
        f'classifier = OnnxImageClassifier("path/to/this/folder", file="{first}")',
        'classifier("image.jpg", top_k=3)  # as pipeline("image-classification")',
        "```",
        "",
        "or with ONNX Runtime alone:",
        "",
        "```python",
        "import onnxruntime",
        "from transformers import AutoImageProcessor",
        "",
        'processor = AutoImageProcessor.from_pretrained("path/to/this/folder")',
        f'session = onnxruntime.InferenceSession("path/to/this/folder/{first}")',
        'logits = session.run(["logits"], dict(processor(images=[image], return_tensors="np")))[0]',
        "```",
        "",
        "or on a folder of images, into `predictions.csv` (file, top-k labels and scores):",
        "",
        "```bash",
        "smile-hf train --do_train False --do_predict --predict_dir my_images --predict_backend onnx \\",
        f"    --onnx_file {first} --model_name_or_path path/to/this/folder --output_dir predictions",
        "```",
    ])  # fmt: skip


def onnx_text_card_section(files: dict[str, str], inputs: Sequence[str]) -> str:
    """The card section of a text classifier's folder holding ONNX exports (see [`onnx_card_section`]): the graph's
    `inputs` (those of the folder's tokenizer) and how to run it on ONNX Runtime through the tokenizer."""
    lines = [f"- `{name}`: {what}" for name, what in files.items()]
    first, names = next(iter(files)), ", ".join(f"`{name}`" for name in inputs)
    return "\n".join([
        "## ONNX",
        "",
        "Besides the PyTorch weights (`model.safetensors`, `config.json`) and the tokenizer, this folder holds ONNX "
        f"graphs of the same model (inputs {names}, any batch size and sequence length; output `logits`):",
        "",
        *lines,
        "",
        "```python",
        "import onnxruntime",
        "from transformers import AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        f'session = onnxruntime.InferenceSession("path/to/this/folder/{first}")',
        'encoded = tokenizer(["A text to classify."], padding=True, truncation=True, return_tensors="np")',
        f"logits = session.run([\"logits\"], {{name: encoded[name] for name in {tuple(inputs)!r}}})[0]",
        "```",
    ])  # fmt: skip


def card_section(text: str, name: str) -> str | None:
    """The section `name` of a model card (between its `<!-- smile_hf:NAME -->` markers), or `None`."""
    start, end = f"<!-- smile_hf:{name} -->", f"<!-- /smile_hf:{name} -->"
    match = re.search(re.escape(start) + r"\n(.*?)\n?" + re.escape(end), text, re.S)
    return match.group(1) if match else None


def kept_onnx_section(old_card: str, folder: str | os.PathLike) -> str | None:
    """The ONNX section of a folder's previous card when every ONNX file it lists is still in the folder (a card
    rendered again after training keeps it), else `None`."""
    section = card_section(old_card, ONNX_CARD_SECTION)
    files = re.findall(r"^- `([^`]+\.onnx)`:", section or "", re.M)
    return section if files and all(os.path.isfile(os.path.join(folder, f)) for f in files) else None


def replace_card_section(text: str, name: str, section: str) -> str:
    """`text` (a model card) with the section `name` set to `section`: in place of the one written before (between
    `<!-- smile_hf:NAME -->` markers), else appended."""
    start, end = f"<!-- smile_hf:{name} -->", f"<!-- /smile_hf:{name} -->"
    block = f"{start}\n{section.strip()}\n{end}\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block
