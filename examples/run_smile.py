#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune any `AutoModelForImageClassification` checkpoint on an image-classification dataset with SMILE
(Self-Distilled MIxup, arXiv 2103.13941) or a transfer-learning baseline, with [`SmileTrainer`].

The steps read top to bottom, on the public API of smile_hf: parse the arguments, load the data, load the model,
build the trainer, train (resuming from the last checkpoint of `--output_dir`), evaluate, save, and write the model
card or push to the Hub. Change the step you need (another dataset loader, another collator, other metrics).

    # The headline run: SMILE on Food-101 from microsoft/resnet-50 (the default model of the Hub presets)
    accelerate launch examples/run_smile.py --dataset food101

    # Offline: the bundled Fashion-MNIST ResNet on scikit-learn's digits, 10 images per class
    python examples/run_smile.py --dataset digits --train_samples_per_class 10 --method smile

    # Your own image folders (one sub-folder per class), or the arguments from a .json / .yaml file
    python examples/run_smile.py --train_dir data/train --validation_dir data/val --method l2sp+mixup
    python examples/run_smile.py args.json

A `--dataset` preset trains with its recipe (Food-101: the SMILE paper's, the reference optimisation for 9,000
steps) wherever you give no option; any option you give wins. `python examples/run_smile.py --help` lists them all.

`smile-hf train` takes the same arguments and trains the same model. It is the full-featured driver, and does what
this script does not: it refuses to resume an output folder that holds another run or a finished one
(`run_config.json`), reports bad input in one line before downloading anything, evaluates or classifies without
training (`--do_train False`, `--do_predict`), searches hyperparameters (`--hp_search_trials`), calibrates
(`--calibration`) and writes `results.json`. This script refuses those options.
"""

import logging
import os
import sys

from transformers import HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.data import TransformConfig, eval_image_processor, prepare_datasets, set_transforms
from smile_hf.metrics import ClassificationMetrics, load_classification_metric
from smile_hf.modeling import load_image_processor
from smile_hf.run import (
    DRIVER_ONLY_OPTIONS,
    DataTrainingArguments,
    ModelArguments,
    apply_defaults,
    configure_logging,
    given_options,
    loading_kwargs,
    run_processes_on_cpu_without_accelerator,
)

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    # Several processes (torchrun, accelerate launch) on a machine without a GPU: train on the CPU, with gloo.
    run_processes_on_cpu_without_accelerator()

    # 1. The arguments, from the command line or a .json / .yaml file. Then what you did not give: the recipe of the
    #    `--dataset` preset, the model (microsoft/resnet-50, or the bundled one for `digits`), the output folder
    #    (runs/<dataset>-<method>-<model>), the data loader workers.
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, SmileTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        read = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args = read(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    given = given_options(argv)
    training_args = apply_defaults(model_args, data_args, training_args, given)
    refused = sorted(given & DRIVER_ONLY_OPTIONS) + ([] if training_args.do_train else ["do_train"])
    if data_args.is_text():  # this script's data and transforms are images'
        parser.error("text data (--train_file, a text --dataset): use `smile-hf train`, which trains text classifiers.")
    if refused:
        parser.error(f"{', '.join('--' + name for name in refused)}: use `smile-hf train`, which has them.")

    configure_logging(training_args, __name__)
    logger.info(f"Model: {model_args.model_name_or_path}; output folder: {training_args.output_dir}")
    if data_args.recipe is not None:
        logger.info(data_args.recipe.line())

    # 2. The last checkpoint of --output_dir, if any: training resumes from it (--overwrite_output_dir: it does not).
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir) and not training_args.overwrite_output_dir:
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.info(f"Resuming from {checkpoint}: pass --overwrite_output_dir True to train from the start.")

    # 3. The data: a preset (a Hub dataset, or the offline `digits`) or image folders, with its columns and labels
    #    checked, and the subsets asked for (few-shot: --train_samples_per_class). The transforms are the SMILE
    #    reference's (random resized crop and flip for training; resize and center crop for evaluation), sized and
    #    normalised from the checkpoint's image processor.
    loading = loading_kwargs(model_args)  # from_pretrained's cache_dir, revision, token, trust_remote_code
    with training_args.main_process_first(desc="loading the datasets"):
        data = prepare_datasets(**data_args.dataset_kwargs(model_args), seed=training_args.seed)
        processor = load_image_processor(model_args.model_name_or_path, **loading)
        transforms = TransformConfig.from_image_processor(
            processor, data_args.crop_pct, data_args.random_horizontal_flip, data_args.keep_aspect
        )
        set_transforms(data, transforms, training_args.seed)
    logger.info(f"Data: {data.description}: {len(data.train)} train / {len(data.eval)} eval examples")

    # 4. The model: SmileTrainer loads the checkpoint with a new head for the data's classes (and, for the methods
    #    that need it, the source model with its head), with these `from_pretrained` arguments.
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}), **loading, "num_labels": len(data.label_names),
        "id2label": data.id2label,
    }  # fmt: skip

    # 5. The trainer: top-1 / top-5 accuracy and calibration error, and the evaluation transform saved with the model
    #    as its image processor (what `pipeline("image-classification")` will feed it).
    set_seed(training_args.seed)
    trainer = SmileTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        compute_metrics=ClassificationMetrics(metric=load_classification_metric(keep_in_memory=True)),
        processing_class=eval_image_processor(transforms),
    )

    # 6. Train, evaluate, save.
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model()
    trainer.save_state()

    # 7. The model card (README.md beside the model), with the dataset, the task and the preset's recipe, pushed to
    #    the Hub with --push_to_hub.
    card = {"finetuned_from": model_args.model_name_or_path, "tasks": "image-classification",
            "tags": ["image-classification", training_args.method]}  # fmt: skip
    if data.source is not None:
        card.update(dataset=data.source.name, dataset_tags=data.source.hub_id, dataset_args=data.source.config,
                    dataset_split=data.source.eval_split, dataset_revision=data.source.revision)  # fmt: skip
    if data_args.recipe is not None:
        card["training_recipe"] = data_args.recipe.card_text(training_args.regularizer)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.create_model_card(**card)
    return metrics


if __name__ == "__main__":
    main()
