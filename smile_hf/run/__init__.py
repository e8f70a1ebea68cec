# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The run driver behind `smile-hf train` (one run, full-featured; `examples/run_smile.py` is the short script of
the same run), `smile-hf compare` and `examples/compare_methods.py`: arguments, loading, one training run with its
results, card and predictions, and the resume protection of its output folder.

- `arguments.py`: `ModelArguments`, `DataTrainingArguments`, parsing (command line, `.json`, `.yaml`) and the defaults
  that depend on other arguments ([`apply_defaults`]).
- `recipes.py`: the recipe of a `--dataset` preset applied to a run's arguments ([`smile_hf.recipes`] holds the
  recipes and the one function that applies them).
- `help.py`: the grouped `--help`.
- `loading.py`: the checkpoint checked before anything else, its image processor, the data with its transforms.
- `driver.py`: one run ([`run`], [`train_one`]) and what defines it (`run_config.json`).
- `lock.py`: one run per output folder (a lock held for the whole run, refusing a second one).
- `outputs.py`: `results.json` and its table, the model card's arguments.
- `predict.py`: without training, evaluate a trained model and classify a folder of images.
- `hp_search.py`: `--hp_search_trials`: the hyperparameter search on a held-out validation split, its trials, its
  Optuna and Ray backends and what it leaves behind (its options and spaces: [`smile_hf.tuning`]);
  `validation_source.py`: where that validation split comes from.
- `compare.py`: several methods over seeds in one call, the protection of their folder, their curves and the figures
  drawn from all of them.
"""

from .arguments import (
    BUNDLED_CHECKPOINT,
    DEFAULT_MODEL,
    DRIVER_ONLY_OPTIONS,
    DataTrainingArguments,
    InputError,
    ModelArguments,
    apply_defaults,
    build_parser,
    check_inference_args,
    default_model,
    default_output_dir,
    finalize_args,
    given_options,
    has_accelerator,
    parse_args,
    quiet,
    read_args,
    resolve_bundled,
    run_processes_on_cpu_without_accelerator,
    set_dataloader_defaults,
)
from .driver import configure_logging, main, run, run_config, train_one
from .loading import check_model, is_offline, load_processor, load_trained_model, loading_kwargs, prepare_data
from .outputs import base_model_license, card_arguments, results_table, write_results
from .predict import evaluate_and_predict, predict_folder

__all__ = [
    "BUNDLED_CHECKPOINT",
    "DEFAULT_MODEL",
    "DRIVER_ONLY_OPTIONS",
    "DataTrainingArguments",
    "InputError",
    "ModelArguments",
    "apply_defaults",
    "base_model_license",
    "build_parser",
    "card_arguments",
    "check_inference_args",
    "check_model",
    "configure_logging",
    "default_model",
    "default_output_dir",
    "evaluate_and_predict",
    "finalize_args",
    "given_options",
    "has_accelerator",
    "is_offline",
    "load_processor",
    "load_trained_model",
    "loading_kwargs",
    "main",
    "parse_args",
    "predict_folder",
    "prepare_data",
    "quiet",
    "read_args",
    "resolve_bundled",
    "results_table",
    "run",
    "run_config",
    "run_processes_on_cpu_without_accelerator",
    "set_dataloader_defaults",
    "train_one",
    "write_results",
]
