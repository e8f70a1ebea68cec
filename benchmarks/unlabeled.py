# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Do unlabelled images help? Fine-tuning, SMILE, SMILE with unlabelled images, FixMatch and Mean Teacher on `digits`
with 1, 2, 5, 10 and 20 labelled images per class and the rest of the training split as unlabelled images (their
labels dropped: `smile_hf.data.unlabeled_from_train`), from both bundled source checkpoints, with paired 95% intervals
over seeds.

Every run is the shots curve's (`benchmarks.accuracy`: the SMILE reference recipe, SGD Nesterov 0.9, lr 0.01, wd 1e-4,
batch 48, lr x0.1 at 2/3, `--max_steps` steps, no flip). A seed draws the labelled subset, the head, the data order,
the mixes and the unlabelled stream, and the four methods share it, so the difference of two methods on one seed is
a paired observation: mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n) (`benchmarks.shots_curve.paired_differences`).

- `smile+unlabeled`: SMILE with `unlabeled_batch_ratio` 1 (48 unlabelled images per step, mixed among themselves,
  `L_aux` and `L_reg` on them with SMILE's weights);
- `fixmatch`: the paper's defaults (tau 0.95, lambda_u 1, mu 7: 336 unlabelled images per step), on the same recipe;
- `mean_teacher`: the reference code's CIFAR-10 settings (consistency 100 ramped up over 5/180 of training, EMA decay
  0.97, mu 3: 144 unlabelled images per step, each read twice), on the same recipe.

    python -m benchmarks.unlabeled                      # the full grid: 2 sources x 5 shots x 5 seeds x 5 methods
    python -m benchmarks.unlabeled --shots 1,5,20 --seeds 0,1,2 --max_steps 100   # a reduced grid (said so)
    python -m benchmarks.unlabeled --report_only
"""

from __future__ import annotations

import argparse
import os

from . import grid, shots_curve
from .accuracy import load_data, quiet, train_and_evaluate
from .accuracy_targets import register_targets, set_transforms_decoding_once
from .common import RESULTS_DIR, markdown_table
from .shots_curve import _interval_cell, default_sources, parse_sources, shot_label

SHOTS = (1, 2, 5, 10, 20)
SEEDS = (0, 1, 2, 3, 4)
MAX_STEPS = 200
METHODS = {  # label -> (method spec, trains with the unlabelled images)
    "finetune": ("finetune", False),
    "smile": ("smile", False),
    "smile+unlabeled": ("smile", True),
    "fixmatch": ("fixmatch", True),
    "mean_teacher": ("mean_teacher", True),
}
COMPARISONS = (
    ("smile+unlabeled", "smile"),
    ("smile+unlabeled", "finetune"),
    ("fixmatch", "finetune"),
    ("smile+unlabeled", "fixmatch"),
    ("mean_teacher", "finetune"),
    ("smile+unlabeled", "mean_teacher"),
)
FULL_GRID = {"shots": list(SHOTS), "seeds": list(SEEDS), "max_steps": MAX_STEPS, "methods": list(METHODS)}


def unlabeled_images(job: dict, data, config):
    """The training images the labelled subset left out, labels dropped, with the training transform."""
    from smile_hf.data import BatchTransform, ImageTransform, prepare_datasets, unlabeled_from_train

    full = prepare_datasets(dataset=job["target"], seed=job["seed"])
    unlabeled = unlabeled_from_train(full.train, data.label_column, data.train)
    unlabeled.set_transform(BatchTransform(ImageTransform(config, True), data.image_column, None, "unlabelled", job["seed"]))
    return unlabeled


def run_job(job: dict) -> dict:
    """One (source, shots, seed, method) run of `benchmarks.accuracy`, with the unlabelled images where the method
    label says so."""
    import torch

    torch.set_num_threads(job["threads"])
    quiet()
    spec, with_unlabeled = METHODS[job["method"]]
    data, config = load_data(job)
    set_transforms_decoding_once(data, config)
    unlabeled = unlabeled_images(job, data, config) if with_unlabeled else None
    result = train_and_evaluate({**job, "method": spec}, data, unlabeled=unlabeled)
    return {**result, "method": job["method"], "source": job["source"]}


def summarise(runs: list[dict], sources: dict, shots, methods) -> dict:
    """`summary[source][shots][method]`: accuracy t-interval over seeds; `summary[source][shots]["a - b"]`: paired
    (`benchmarks.shots_curve.summarise` with this benchmark's comparisons)."""
    return shots_curve.summarise(runs, sources, "digits", shots, methods, COMPARISONS)


def report(payload: dict) -> str:
    """The markdown report: one table per source, accuracy and the paired differences in points with 95% intervals."""
    settings, summary = payload["settings"], payload["summary"]
    methods = settings["methods"]
    reduced = settings["reduced"]
    lines = [
        "## Unlabelled images: fine-tuning, SMILE, SMILE with unlabelled images, FixMatch, Mean Teacher",
        "",
        (f"**Reduced run** (the full grid is shots {FULL_GRID['shots']}, seeds {FULL_GRID['seeds']}, "
         f"{FULL_GRID['max_steps']} steps): shots {settings['shots']}, seeds {settings['seeds']}, "
         f"{settings['max_steps']} steps. " if reduced else "")
        + f"Target: {settings['target']}; every training image outside the labelled subset is an unlabelled image "
        "(labels dropped). The reference recipe (SGD Nesterov 0.9, lr 0.01, wd 1e-4, batch 48, lr x0.1 at 2/3). "
        "Top-1 accuracy in %, mean over seeds [95% t-interval]; differences paired per seed (same labelled subset, "
        "head, data order), mean [95% t-interval] (seeds where the first is higher / seeds).",
        "",
    ]  # fmt: skip
    for source, info in settings["sources"].items():
        header = ["shots", *methods, *(f"{a} − {b}" for a, b in COMPARISONS)]
        rows = []
        for s in settings["shots"]:
            cell = summary.get(source, {}).get(shot_label(s), {})
            rows.append([shot_label(s), *(_interval_cell(cell.get(m)) for m in methods),
                         *(_interval_cell(cell.get(f"{a} - {b}"), sign=True) for a, b in COMPARISONS)])  # fmt: skip
        lines += [f"### Source `{info['path']}`", "", markdown_table(header, rows), ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sources", default=None, help="name=path,... (default: both bundled checkpoints)")
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    grid.add_output_arguments(parser, os.path.join(RESULTS_DIR, "unlabeled"))
    return parser.parse_args(argv)


def plan(opts) -> tuple[dict, list[dict]]:
    """The settings and every job (source x shots x seed x method)."""
    shots, seeds = [int(s) for s in opts.shots.split(",")], [int(s) for s in opts.seeds.split(",")]
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; known: {', '.join(METHODS)}.")
    sources = {name: {"path": os.path.relpath(path, os.getcwd())}
               for name, path in parse_sources(opts.sources or default_sources()).items()}  # fmt: skip
    jobs = [
        {"source": name, "target": "digits", "shots": s, "seed": seed, "method": m, "max_steps": opts.max_steps,
         "checkpoint": os.path.abspath(info["path"]), "threads": 1}
        for seed in seeds for s in shots for name, info in sources.items() for m in methods
    ]  # fmt: skip (seed first: a run stopped early still holds whole paired cells, for fewer seeds)
    grid = {"shots": shots, "seeds": seeds, "max_steps": opts.max_steps, "methods": methods}
    settings = {"target": "digits", **grid, "sources": sources, "reduced": grid != FULL_GRID,
                "unlabeled_batch_ratio": {"smile+unlabeled": 1.0, "fixmatch": 7.0, "mean_teacher": 3.0}}  # fmt: skip
    return settings, jobs


def key(run: dict) -> tuple:
    return run["source"], run["shots"], run["seed"], run["method"]


GRID = grid.Grid(
    module="unlabeled", plan=plan, run_job=run_job, key=key, report=report, setup=register_targets,
    summarise=lambda runs, settings: summarise(runs, settings["sources"], settings["shots"], settings["methods"]),
)  # fmt: skip


def main(argv=None) -> dict:
    return grid.main(GRID, parse_args(argv), argv)


if __name__ == "__main__":
    main()
