# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a run leaves behind besides the model: `results.json` and its table, and the model card's arguments."""

from __future__ import annotations

import json
import os
import shlex
import statistics
from collections.abc import Iterator
from contextlib import contextmanager

from ..checkpoints import DiskFullError
from ..config import SmileTrainingArguments
from ..data import PreparedData, one_line
from ..guard import NonFiniteLossError, NonFiniteWeightsError
from ..recipes import AppliedRecipe
from .arguments import InputError, ModelArguments
from .loading import is_offline


def card_arguments(
    model_args: ModelArguments,
    training_args: SmileTrainingArguments,
    data: PreparedData,
    from_scratch: bool,
    recipe: AppliedRecipe | None = None,
    search=None,
) -> dict:
    """What the model card says beyond what the trainer knows: base model, license, the dataset (readable name, Hub
    id, configuration, revision, split evaluated on and what it is; local data by folder name only), the `--dataset`
    preset's recipe used, the validation split held out of the training data and the hyperparameter search
    (`search`, a `SearchRecord`), if any."""
    source = data.source
    task = f"{getattr(data, 'modality', 'image')}-classification"  # image-classification, text-classification
    card = {
        "finetuned_from": None if from_scratch else model_args.model_name_or_path,
        "license": model_args.license or base_model_license(model_args),
        "tasks": task,
        "tags": [task, training_args.method],
    }
    if source is not None:
        card.update(
            dataset=source.name, dataset_tags=source.hub_id, dataset_args=source.config, dataset_split=source.eval_split,
            dataset_revision=source.revision, local_dataset=source.local,
            dataset_split_role=source.eval_split_role + ("" if source.official_split else " (not the official split)"),
            **source.sample_counts(),
        )  # fmt: skip
    if recipe is not None:
        card["training_recipe"] = recipe.card_text(training_args.regularizer)
    if getattr(data, "validation_split", None) is not None:
        card["validation_split"] = data.validation_split.card_text(data.items)
    if search is not None:
        card["hyperparameter_search"] = search.summary()
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


def _hub_failure(error: Exception) -> str:
    """Why a call to the Hub failed, and the client's error, in one line."""
    why = "offline (HF_HUB_OFFLINE=1)" if is_offline() else "the Hub cannot be reached, or refused it"
    return f"{why} [{one_line(error)}]"


def create_hub_repo(training_args: SmileTrainingArguments) -> None:
    """With `--push_to_hub`, create (or find) the Hub repository the run pushes to, as the `Trainer` does when it is
    built (`hub_model_id`, else the output folder's name; `hub_token`; `hub_private_repo`), before anything loads or
    trains: a Hub that cannot be reached (offline, no network) or refuses (no write token) is one [`InputError`].
    Main process only, as in the `Trainer`."""
    if not (training_args.push_to_hub and training_args.process_index == 0):
        return
    from transformers import trainer

    name = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
    try:
        trainer.hf_api().create_repo(
            name, token=training_args.hub_token, private=training_args.hub_private_repo, exist_ok=True
        )
    except Exception as error:  # offline, unreachable, refused: whichever client error it is
        raise InputError(
            f"--push_to_hub: cannot create the Hub repository '{name}': {_hub_failure(error)}. "
            "Log in (`hf auth login`) or pass --hub_token, check the network, or drop --push_to_hub."
        ) from error


class HubPushError(RuntimeError):
    """Raised when the final upload to the Hub fails (the Hub gone since the run began, or a refusal): one line naming
    the repository, the local folder the model is saved in and the command that pushes it later."""


HUB_IGNORE_PATTERNS = ("_*", "checkpoint-*")
"""What `Trainer.push_to_hub` leaves out of an upload of the output folder (also left out by the command of
[`HubPushError`])."""


@contextmanager
def push_deferred(training_args: SmileTrainingArguments) -> Iterator[None]:
    """While inside, `--push_to_hub` is off: the final `save_model` writes the model without uploading it, and
    [`push_final_model`] uploads it once, with its card."""
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    try:
        yield
    finally:
        training_args.push_to_hub = push_to_hub


def push_final_model(trainer, card: dict) -> None:
    """`trainer.push_to_hub(**card)` (the model, its card and image processor or tokenizer, already saved in
    `output_dir`); any failure is a [`HubPushError`] of one line saying where the model is saved and how to push it
    later."""
    args = trainer.args
    try:
        trainer.push_to_hub(**card)
    except (DiskFullError, NonFiniteLossError, NonFiniteWeightsError):  # its save's own errors, not the Hub's
        raise
    except Exception as error:  # unreachable, offline, refused: whichever client error it is
        repo = getattr(trainer, "hub_model_id", None) or args.hub_model_id or os.path.basename(
            os.path.abspath(args.output_dir)
        )
        command = ["hf", "upload", repo, os.path.abspath(args.output_dir), "."]
        command += [f"--exclude={pattern}" for pattern in HUB_IGNORE_PATTERNS]
        command += ["--revision", args.hub_revision] if args.hub_revision else []
        raise HubPushError(
            f"--push_to_hub: the upload to the Hub repository '{repo}' failed: {_hub_failure(error)}. The model "
            f"is saved locally in {args.output_dir}: push it later with `{shlex.join(command)}`."
        ) from error


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


def write_results(runs: list[dict], output_dir: str, file_name: str = "results.json", **extra) -> str:
    """Write `{"runs": runs, "table": results_table(runs), **extra}` to `output_dir/file_name`; return its path."""
    path = os.path.join(output_dir, file_name)
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"runs": runs, "table": results_table(runs), **extra}, f, indent=2, default=str)
    return path


