# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""A run without training (`--do_train False`): evaluate a trained model, classify a folder of images."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace

from transformers import Trainer

from ..config import SmileTrainingArguments
from ..data import (
    DataError,
    ImageTransform,
    TransformConfig,
    align_to_model_classes,
    collate,
    image_files,
    text_collator,
)
from ..inference import PREDICTIONS_FILE, classify_files, write_predictions
from ..metrics import ClassificationMetrics, load_classification_metric
from .arguments import DataTrainingArguments, ModelArguments, quiet
from .loading import check_model, load_processor, load_trained_model, prepare_data
from .text import predict_text_file


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
    the one the model was exported with ([`TransformConfig.for_evaluation`]). Writes `eval_results.json` (with
    `--do_eval`); returns it and the evaluating trainer (`None` without `--do_eval`)."""
    check_model(model_args, data_args if training_args.do_eval else None)
    text = data_args.is_text()
    processor = load_processor(model_args, data_args)  # a text model's tokenizer
    config = None if text else TransformConfig.for_evaluation(processor, data_args.crop_pct)
    model = load_trained_model(model_args).to(training_args.device)
    result, trainer = {"model": model_args.model_name_or_path, "metrics": {}}, None
    if training_args.do_eval:
        if data_args.dataset is None and data_args.train_dir is None and not text:  # --validation_dir alone
            data_args = replace(data_args, train_dir=data_args.validation_dir)
        if data_args.dataset is None and data_args.train_file is None and text:  # --validation_file alone
            data_args = replace(data_args, train_file=data_args.validation_file)
        with training_args.main_process_first(desc="loading the datasets"):
            data = prepare_data(data_args, model_args, training_args.seed, processor, config, quiet(training_args))
        align_to_model_classes(data, model.config.id2label)  # a subset of its classes: allowed, with a note
        trainer = Trainer(
            model=model, args=training_args, eval_dataset=data.eval,
            data_collator=text_collator(processor) if text else collate,
            compute_metrics=ClassificationMetrics(metric=load_classification_metric(keep_in_memory=True)),
        )  # fmt: skip
        result.update(
            data=data.description, data_source=asdict(data.source) if data.source else None,
            num_eval=len(data.eval), metrics=trainer.evaluate(),
        )  # fmt: skip
    if training_args.do_predict and text:
        result["predictions"] = predict_text_file(model, processor, data_args, training_args)
    elif training_args.do_predict:
        result["predictions"] = predict_folder(model, data_args, training_args, config)
    if training_args.should_save and training_args.do_eval:  # predicting alone writes predictions.csv only
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as f:
            json.dump(result, f, indent=2, default=str)
        if result["metrics"]:
            print(json.dumps(result["metrics"], indent=2), flush=True)
    return result, trainer


