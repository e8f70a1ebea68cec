#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Compare transfer methods over seeds: every method of `--compare_methods` (optionally plain fine-tuning from random
weights, `--scratch_baseline`) on every seed of `--seeds`, one `smile-hf train` run each, then one results table.

Takes every argument of `smile-hf train`, plus those of `smile_hf.run.compare.ExperimentArguments`; each run is a run
of the same driver (`smile_hf.run`). `smile-hf compare ...` is the same command.

    # Offline demo (no argument, `make demo`): from scratch vs fine-tuning vs SMILE on few-shot digits, 3 seeds,
    # from the bundled Fashion-MNIST ResNet; plots the loss terms and accuracy over steps
    python examples/compare_methods.py

    # Your own folders, fine-tuning vs SMILE on 3 seeds
    python examples/compare_methods.py --train_dir data/train --validation_dir data/val --train_samples_per_class 10 \\
        --model_name_or_path microsoft/resnet-50 --compare_methods finetune,smile --seeds 0,1,2 --output_dir runs/mine

Each run writes `results.json` in `<output_dir>/<label>-seed<seed>`; all of them, and the table (top-1 per seed, then
mean ± sample standard deviation of top-1, top-5 and ECE), go to `<output_dir>/results.json`. With `--plot_curves`,
every run's loss terms (`loss_main`, `loss_aux`, ...) and evaluation accuracy over the steps are drawn in
`<output_dir>/curves.png` (mean over seeds, min-max band) and written as JSON beside it (`--plot_curves PATH.png`:
there instead).
"""

from __future__ import annotations

import sys

from smile_hf.cli import run_cli
from smile_hf.run.compare import main as compare


def main(argv: list[str] | None = None) -> list[dict]:
    # No argument: the offline demo (`smile_hf.run.compare.DEMO_ARGS`). Otherwise: parse the arguments of one run and
    # the comparison's (command line, or one .json / .yaml file), check the model and the output folder, load the data
    # once per seed, train every method on every seed, then write every run's results, the table and the curves.
    return compare(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    run_cli(main, "compare_methods.py")
