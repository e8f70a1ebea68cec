# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""A run without training (`--do_train False`): evaluate a trained model, classify a folder of images, with the
PyTorch model or (`--predict_backend onnx`) its ONNX export on ONNX Runtime, through the same evaluation transform."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, Trainer
from transformers.utils import cached_file

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
from ..inference import PREDICTIONS_FILE, classify_files, classify_files_with, write_predictions
from ..metrics import ClassificationMetrics, load_classification_metric
from ..onnx_export import OnnxExportError, onnx_logits, onnx_session, require_onnx
from .arguments import DataTrainingArguments, InputError, ModelArguments, quiet
from .loading import check_model, load_processor, load_trained_model, loading_kwargs, prepare_data
from .text import predict_text_file


@dataclass
class OnnxLogits:
    """An exported classifier on ONNX Runtime, as [`~smile_hf.inference.classify_files_with`] calls it: `pixel_values`
    in, logits out; the classes and channel count of the folder's `config.json`."""

    path: str
    session: Any
    id2label: dict[int, str]
    num_channels: int

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(onnx_logits(self.session, pixel_values))


def load_onnx_classifier(model_args: ModelArguments, onnx_file: str) -> OnnxLogits:
    """The ONNX Runtime session of `onnx_file` in `--model_name_or_path` (a folder, or a Hub repository holding the
    file), with the classes of its `config.json`; an [`InputError`] names what is missing."""
    try:
        require_onnx()
    except OnnxExportError as error:
        raise InputError(f"--predict_backend onnx: {error}") from error
    name, kwargs = model_args.model_name_or_path, loading_kwargs(model_args)
    hub = {key: kwargs[key] for key in ("cache_dir", "revision", "token")}
    path = cached_file(name, onnx_file, _raise_exceptions_for_missing_entries=False, **hub)
    if path is None or not os.path.isfile(path):
        raise InputError(
            f"--predict_backend onnx: no {onnx_file} in '{name}': export it first (smile-hf export {name} --format "
            "onnx, with --quantize int8 for model.int8.onnx), or pass --onnx_file."
        )
    config = AutoConfig.from_pretrained(name, **kwargs)
    labels = {i: config.id2label[i] for i in range(config.num_labels)}
    return OnnxLogits(path, onnx_session(path), labels, getattr(config, "num_channels", 3))


def predict_folder(
    model: nn.Module | OnnxLogits,
    data_args: DataTrainingArguments,
    training_args: SmileTrainingArguments,
    config: TransformConfig,
) -> str | None:
    """Classify the images of `--predict_dir` with `model` (a PyTorch classifier, or an [`OnnxLogits`]; the
    evaluation transform of `config`) and write `<output_dir>/predictions.csv`; return its path (main process only,
    `None` on the others)."""
    if not training_args.should_save:
        return None
    files = image_files(data_args.predict_dir)
    if not files:
        raise DataError(f"--predict_dir '{data_args.predict_dir}' contains no image files.")
    options = (ImageTransform(config, train=False), data_args.top_k, training_args.per_device_eval_batch_size,
               data_args.corrupt_images)  # fmt: skip
    if isinstance(model, OnnxLogits):
        print(f"Classifying with {model.path} on ONNX Runtime", flush=True)
        predictions = classify_files_with(model, model.id2label, model.num_channels, files, *options)
    else:
        predictions = classify_files(model, files, *options)
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
    if data_args.predict_backend == "onnx":  # --do_predict alone (check_predict_backend)
        classifier = load_onnx_classifier(model_args, data_args.onnx_file)
        predictions = predict_folder(classifier, data_args, training_args, config)
        return {"model": model_args.model_name_or_path, "metrics": {}, "predictions": predictions}, None
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


