# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""One run, start to end: check the model, load the data, refuse or resume the output folder's run, train,
evaluate, save, write the card and `results.json`, push, classify `--predict_dir`."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, fields

import transformers
from safetensors import SafetensorError
from transformers import set_seed

from .._compat import shut_down_dataloader_workers
from ..checkpoints import resumable_interrupts, resume_point, write_run_config
from ..config import SmileTrainingArguments
from ..data import PreparedData, TextData, eval_image_processor, one_line, text_collator
from ..metrics import ClassificationMetrics, load_classification_metric
from ..recipes import AppliedRecipe
from ..trainer import SmileTrainer
from ..tuning import SEARCH_ONLY_FIELDS
from ..unlabeled import unlabeled_record
from .arguments import (
    TEXT_ONLY_FIELDS,
    DataTrainingArguments,
    InputError,
    ModelArguments,
    parse_args,
    quiet,
    run_processes_on_cpu_without_accelerator,
)
from .hp_search import check_not_finished, check_search, needs_validation, search
from .loading import check_model, check_unlabeled_options, load_processor, prepare_data, student, unlabeled_for
from .lock import run_lock
from .outputs import card_arguments, create_hub_repo, push_deferred, push_final_model, results_table, write_results
from .predict import evaluate_and_predict, predict_folder
from .text import predict_text_file

logger = logging.getLogger(__name__)


def train_one(
    model_args: ModelArguments,
    training_args: SmileTrainingArguments,
    data: PreparedData,
    processor,
    label: str | None = None,
    from_scratch: bool = False,
    resume: str | None = None,
    recipe: AppliedRecipe | None = None,
    search=None,
) -> tuple[dict, SmileTrainer]:
    """Train (from checkpoint `resume` if given), evaluate, save and push one run; return its results (named `label`,
    default: the method) and its trainer. `from_scratch` starts from the checkpoint's architecture with random
    weights (no teacher); `recipe` (the `--dataset` preset's recipe used) goes into the results and the card;
    `search` (a `SearchRecord`) is the hyperparameter search whose best values it trains with, named in the card and
    the results. With `--calibration`, the temperature is fitted on `data.validation`."""
    validation = getattr(data, "validation", None)  # a split held out of training and evaluation, if the data has one
    if training_args.calibration != "none" and validation is None:
        raise InputError(
            f"--calibration {training_args.calibration} fits the temperature on a validation split held out of both "
            "training and evaluation, and this data has only a training and an evaluation split: use --calibration "
            "none, or call SmileTrainer.calibrate(validation_dataset) in your own script."
        )
    training_args, unlabeled = unlabeled_for(training_args, data)
    set_seed(training_args.seed)
    model = student(model_args, training_args, data, from_scratch)
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
            unlabeled_dataset=unlabeled,
            data_collator=text_collator(processor) if isinstance(data, TextData) else None,  # padded per batch
        )
        trainer.unlabeled_source = getattr(data, "unlabeled_source", None)
    except (OSError, SafetensorError) as error:  # a model folder without weights, or with damaged ones
        raise InputError(
            f"Cannot load the weights of --model_name_or_path '{model_args.model_name_or_path}': {one_line(error)}"
        ) from error
    if resume:
        logger.info(f"Resuming from {resume}")
    train_result = trainer.train(resume_from_checkpoint=resume)
    if training_args.calibration != "none":  # before evaluating and saving: the export is the calibrated model
        trainer.calibrate(validation)
    metrics = trainer.evaluate()
    if training_args.save_strategy != "no":
        with push_deferred(training_args):  # pushed once below, with the card
            trainer.save_model()
        trainer.save_state()
    card = card_arguments(model_args, training_args, data, from_scratch, recipe, search)
    trainer.create_model_card(**card)  # README.md beside the model, pushed or not (main process only)
    if training_args.push_to_hub:
        push_final_model(trainer, card)  # a failed upload is one line naming the saved folder
    shut_down_dataloader_workers(trainer)  # persistent workers would outlive the run
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
        "unlabeled": unlabeled_record(trainer),
        "world_size": training_args.world_size,
        "global_step": trainer.state.global_step,
        "train_runtime": train_result.metrics.get("train_runtime"),
        "metrics": metrics,
        "calibration": trainer.calibration.to_dict() if trainer.calibration is not None else None,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "validation_split": split.to_dict(data.items) if (split := getattr(data, "validation_split", None)) else None,
        "hp_search": {"summary": search.summary(), "best_values": search.best_values} if search is not None else None,
    }, trainer


def configure_logging(training_args: SmileTrainingArguments, *loggers: str) -> None:
    """Log to stderr at the process's log level: `smile_hf`, `transformers`, `datasets` and `loggers`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler()])
    level = training_args.get_process_log_level()
    for name in ("smile_hf", *loggers):
        logging.getLogger(name).setLevel(level if level != logging.WARNING else logging.INFO)
    transformers.utils.logging.set_verbosity(level)
    import datasets

    datasets.utils.logging.set_verbosity(level)


def run(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> tuple[dict, SmileTrainer]:
    """Check the model, prepare the data, then train, evaluate, save and push; write and print `results.json`.
    Return the run's results and its trainer. The run holds the lock of its `--output_dir` throughout
    ([`run_lock`]): a second run on the same folder is refused."""
    configure_logging(training_args)
    with run_lock(training_args), resumable_interrupts(training_args.output_dir):
        return _locked_run(model_args, data_args, training_args)


def _locked_run(
    model_args: ModelArguments, data_args: DataTrainingArguments, training_args: SmileTrainingArguments
) -> tuple[dict, SmileTrainer]:
    default = " (the default; --model_name_or_path changes it)" if model_args.default_model_used else ""
    logger.info(f"Model: {model_args.model_name_or_path}{default}; output folder: {training_args.output_dir}")
    if data_args.recipe is not None:
        logger.info(data_args.recipe.line())
    check_search(data_args, training_args)
    check_unlabeled_options(data_args, [training_args.method])
    if not training_args.do_train:
        return evaluate_and_predict(model_args, data_args, training_args)
    check_model(model_args, data_args)
    create_hub_repo(training_args)  # --push_to_hub: the repository exists before anything trains
    processor = load_processor(model_args, data_args)
    with training_args.main_process_first(desc="loading the datasets"):
        data = prepare_data(data_args, model_args, training_args.seed, processor, disable_tqdm=quiet(training_args),
                            validation=needs_validation(data_args, training_args),
                            calibration=training_args.calibration != "none")  # fmt: skip
    logger.info(
        f"Data: {data.description}: {len(data.train)} train / {len(data.eval)} eval examples; "
        f"world size {training_args.world_size}"
    )
    search_record = None
    if data_args.hp_search_trials:
        check_not_finished(training_args)
        search_record = search(model_args, data_args, training_args, data, disable_tqdm=quiet(training_args))
    config = run_config(model_args, data_args, training_args)
    resume = resume_point(
        training_args.output_dir, config, training_args.resume_from_checkpoint, training_args.overwrite_output_dir
    )
    if training_args.should_save:
        write_run_config(training_args.output_dir, config)
    result, trainer = train_one(
        model_args, training_args, data, processor, resume=resume, recipe=data_args.recipe, search=search_record
    )
    if training_args.do_predict and isinstance(data, TextData):  # --predict_file, tokenized as the training data
        result["predictions"] = predict_text_file(trainer.model, processor, data_args, training_args)
    elif training_args.do_predict:  # the trained model on --predict_dir, with the evaluation transform it was exported with
        result["predictions"] = predict_folder(trainer.model, data_args, training_args, data.transform_config)
    if training_args.should_save:
        path = write_results([result], training_args.output_dir)
        print(f"\nResults ({data.description}, {len(data.eval)} eval {data.items}, model {model_args.model_name_or_path}):")
        print(results_table([result]))
        if data.source is not None and not data.source.official_split:
            print(f"Evaluated on {data.source.eval_split_role or data.source.eval_split}: not the benchmark's official split.")
        print(f"Saved to {path}", flush=True)
    return result, trainer


ADDED_FIELDS = {
    "data": ("unlabeled_dir", "unlabeled_from_train"),
    "training": ("unlabeled_batch_ratio", "fixmatch_threshold", "fixmatch_lambda_u", "mean_teacher_consistency",
                 "mean_teacher_ema_decay", "mean_teacher_rampup", "teacher_fold_batchnorm", "teacher_channels_last",
                 "teacher_bf16"),
}  # fmt: skip
"""Fields that define a run but are newer than run folders on disk: left out of `run_config.json` at their default,
so that those folders keep resuming (a value other than the default is recorded, and compared, as any other)."""


def run_config(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: SmileTrainingArguments,
    from_scratch: bool = False,
) -> dict:
    """What defines this run (compared with the one saved in `--output_dir` before resuming from its checkpoints):
    the checkpoint (name, revision, classes), every data argument, the training arguments that change the trained
    weights (`SmileTrainingArguments.run_defining_values`), and whether it starts from random weights."""
    model = {"model_name_or_path": model_args.model_name_or_path, "model_revision": model_args.model_revision,
             "num_labels": model_args.num_labels}  # fmt: skip
    not_weights = ("predict_dir", "predict_file", "top_k", "predict_backend", "onnx_file", *SEARCH_ONLY_FIELDS)
    if not data_args.is_text():  # read by text runs only: an image run's config is as it was before they existed
        not_weights += TEXT_ONLY_FIELDS
    if not data_args.hp_search_trials and training_args.calibration == "none":
        not_weights += ("validation_source",)  # picks the split only a search or a calibration holds out
    data = {k: v for k, v in asdict(data_args).items() if k not in not_weights}
    config = {"model": model, "data": data, "training": training_args.run_defining_values()}
    for part, args in (("data", data_args), ("training", training_args)):  # folders written before these fields
        defaults = {f.name: f.default for f in fields(args)}
        for name in ADDED_FIELDS[part]:
            if name in config[part] and config[part][name] == defaults.get(name):
                del config[part][name]
    if from_scratch:
        config["from_scratch"] = True
    return json.loads(json.dumps(config, default=str))


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """One run from command-line arguments (default: `sys.argv[1:]`), or one `.json` / `.yaml` file of them; returns
    its results. `prog` names the command in `--help` and argparse's errors."""
    argv = sys.argv[1:] if argv is None else argv
    run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args = parse_args(argv, prog)
    result, _ = run(model_args, data_args, training_args)
    return result

