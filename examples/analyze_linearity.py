#!/usr/bin/env python
# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""How linear each saved run's model is in-between images of its training and evaluation splits, in label space
(probabilities of the new head, and of the source head where the run has one) and feature space (pooled feature, last
feature map): the analysis of the SMILE paper, defined in `smile_hf.analysis`.

    python examples/analyze_linearity.py runs/digits-finetune runs/digits-smile --output linearity.md

A RUN_DIR is the output folder of `examples/run_smile.py` (or one run of `compare_methods.py`) saved with its model
(`--save_strategy` other than `no`; the source head is read from its last checkpoint). The data is rebuilt from its
`run_config.json`. Each RUN_DIR gets `linearity.json`, `linearity.md` and `linearity.png`; the table of every run is
printed (per run, then the mean over the runs of each method), and written to `--output` (Markdown, with the
results as JSON and the plot of every method as PNG beside it) if given.
"""

from __future__ import annotations

import argparse
import os
import sys

from smile_hf.analysis import (
    LAMBDAS,
    analyze_run,
    check_image_run,
    linearity_report,
    write_linearity,
    write_linearity_report,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Output folders of saved runs.")
    parser.add_argument("--splits", default="train,eval", help="Splits to measure: train, eval or both (default).")
    parser.add_argument("--num_pairs", type=int, default=200, help="Pairs of images per split (default 200).")
    parser.add_argument("--lambdas", default=",".join(map(str, LAMBDAS)), help="Mixing coefficients, in (0, 1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the images and pairs drawn.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output", default=None, help="Also write the table of every run here (.md; .json beside).")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not splits or set(splits) - {"train", "eval"}:
        parser.error(f"--splits must name train and/or eval, got '{args.splits}'.")
    for run_dir in args.run_dirs:
        if not os.path.isfile(os.path.join(run_dir, "run_config.json")) or not os.path.isfile(
            os.path.join(run_dir, "config.json")
        ):
            parser.error(f"{run_dir} is not a saved run (needs its config.json and run_config.json): train it with "
                         "a --save_strategy other than 'no'.")  # fmt: skip
        try:
            check_image_run(run_dir)
        except ValueError as error:
            parser.error(str(error))
    lambdas = [float(x) for x in args.lambdas.split(",")]
    results = []
    for run_dir in args.run_dirs:
        result = analyze_run(run_dir, splits, args.num_pairs, lambdas, args.seed, args.batch_size)
        print(f"{run_dir}: " + ", ".join(write_linearity(result, run_dir)), flush=True)
        results.append(result)
    print(linearity_report(results))
    if args.output:
        command = "python examples/analyze_linearity.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_linearity_report(results, args.output, command)
    return results


if __name__ == "__main__":
    main()
