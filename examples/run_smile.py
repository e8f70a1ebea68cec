#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune any `AutoModelForImageClassification` checkpoint on a target dataset with SMILE or a baseline: one run.

In the style of transformers' `examples/pytorch/image-classification/run_image_classification.py`. The steps live in
the package: `smile_hf.run` (arguments, loading, the run and its resume protection, results, card, predictions),
`smile_hf.data` (datasets and transforms), `smile_hf.SmileTrainer` (training). `smile-hf train ...` is the same
command. Several methods or seeds in one call, and the offline demo, are `examples/compare_methods.py`.

    # The headline command: SMILE on Food-101 from microsoft/resnet-50 (the default model for Hub presets), into
    # runs/food101-smile-resnet-50 (the default output folder)
    accelerate launch examples/run_smile.py --dataset food101

    # A benchmark preset with its recipe (the paper's: the reference optimisation for 9,000 steps; any option wins)
    python examples/run_smile.py --dataset cub200 --method smile

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

import sys

from smile_hf.cli import run_cli
from smile_hf.run import parse_args, run, run_processes_on_cpu_without_accelerator


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    # Several processes (torchrun, accelerate launch) on a machine without an accelerator run on the CPU with gloo.
    run_processes_on_cpu_without_accelerator()

    # 1. The arguments: `HfArgumentParser((ModelArguments, DataTrainingArguments, SmileTrainingArguments))` on the
    #    command line, or on one .json / .yaml file; then the defaults that depend on other arguments (the model,
    #    `--output_dir runs/<dataset>-<method>-<model>`, `--do_train`, data loader workers). Bad input stops here.
    model_args, data_args, training_args = parse_args(argv)

    # 2. The run (`smile_hf.run.driver.run`): check the model (config only) and load the data, both before anything
    #    is written; resume this run's last checkpoint, never another run's (`run_config.json`); train with
    #    `SmileTrainer`, evaluate, save, write the model card, push; classify `--predict_dir`; write `results.json`.
    #    With `--do_train False`: evaluate the trained model of `--model_name_or_path` and / or classify a folder.
    result, _trainer = run(model_args, data_args, training_args)
    return result


if __name__ == "__main__":
    run_cli(main, "run_smile.py")
