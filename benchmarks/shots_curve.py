# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""When does SMILE help? The accuracy benchmark (`benchmarks/accuracy.py`) extended into a curve: fine-tuning, mixup
and SMILE at 1, 2, 5, 10 and 20 training images per class and on the full training set, from one or more source
checkpoints, with SMILE - fine-tuning and SMILE - mixup as paired per-seed differences and 95% intervals.

Every run is the accuracy benchmark's (`benchmarks.accuracy.run_one`): the same target (`digits` by default), data
pipeline, recipe (the SMILE reference recipe, SGD Nesterov 0.9, lr 0.01, wd 1e-4, batch 48, lr x0.1 at 2/3) and
`--max_steps` (200) at every shot level, the full set included. A seed draws the few-shot subset, the head, the data
order and the mixes, and the three methods share it: for a (source, shots) cell, the difference of two methods on
seed s is a paired observation, and the interval is Student's t over seeds:

    d_s = acc_SMILE(s) - acc_other(s),   mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)

(`sd` the sample standard deviation; no interval for a single seed). The accuracy bands of the plot are the same
t-interval of each method's mean.

    python -m benchmarks.shots_curve        # -> results/shots_curve.{json,md,png}
    python -m benchmarks.shots_curve --report_only

Sources: `--sources name=path,...` (default: the bundled `fmnist-resnet-tiny`, and `fmnist-resnet-small` when its
folder exists); `--source_seeds name=0,1,2` and `--source_shots name=1,5,full` run a source on fewer seeds or shot
levels than `--seeds` and `--shots`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence

from . import grid
from .accuracy import run_one
from .accuracy_targets import register_targets
from .common import REPO_ROOT, RESULTS_DIR, SOURCE_CHECKPOINT, markdown_table

SHOTS = (1, 2, 5, 10, 20, None)
"""Training images per class; `None` is the whole training split (`full`)."""
SEEDS = (0, 1, 2, 3, 4)
METHODS = ("finetune", "mixup", "smile")
COMPARISONS = (("smile", "finetune"), ("smile", "mixup"))
MAX_STEPS = 200
LARGER_SOURCE = os.path.join(REPO_ROOT, "checkpoints", "fmnist-resnet-small")
"""A wider source model (width 32: 3.9x the bundled one's parameters), trained by `scripts/train_source_model.py
--width 32 --output_dir checkpoints/fmnist-resnet-small`."""


def shot_label(shots: int | None) -> str:
    return "full" if shots is None else str(shots)


def t_quantile(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom (scipy comes with scikit-learn, which the
    `digits` target needs)."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def t_interval(values: Sequence[float]) -> dict:
    """Mean of `values` and its 95% Student-t interval over them (`low`/`high` are None for fewer than two)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "half_width": None, "sd": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "sd": sd, "n": n}


def paired_differences(runs: list[dict], a: str, b: str) -> dict:
    """`a - b` in top-1 accuracy on each seed that both methods ran (runs of one source, target and shot level), with
    its 95% t-interval, and how many seeds favour `a`."""
    acc = {m: {r["seed"]: r["accuracy"] for r in runs if r["method"] == m} for m in (a, b)}
    seeds = sorted(set(acc[a]) & set(acc[b]))
    diffs = [acc[a][s] - acc[b][s] for s in seeds]
    if not diffs:
        return {"seeds": [], "differences": []}
    return {"seeds": seeds, "differences": diffs, **t_interval(diffs), "seeds_better": sum(d > 0 for d in diffs)}


def summarise(runs: list[dict], sources, target: str, shots, methods, comparisons=COMPARISONS) -> dict:
    """`summary[source][shots][method]` = accuracy t-interval over seeds (+ the values),
    `summary[source][shots]["a - b"]` = the paired differences of each pair of `comparisons`."""
    summary = {}
    for source in sources:
        for s in shots:
            cell_runs = [r for r in runs if r["source"] == source and r["target"] == target and r["shots"] == s]
            if not cell_runs:
                continue
            cell = summary.setdefault(source, {}).setdefault(shot_label(s), {})
            for m in methods:
                values = [r["accuracy"] for r in sorted(cell_runs, key=lambda r: r["seed"]) if r["method"] == m]
                if values:
                    cell[m] = {**t_interval(values), "accuracy": values}
            for a, b in comparisons:
                if a in methods and b in methods:
                    cell[f"{a} - {b}"] = paired_differences(cell_runs, a, b)
    return summary


def summarise_grid(runs: list[dict], settings: dict, comparisons=COMPARISONS) -> dict:
    """[`summarise`] over the sources, target, shot levels and methods of a grid's `settings`."""
    return summarise(runs, settings["sources"], settings["target"], settings["shots"], settings["methods"], comparisons)


def _pct(x: float | None, sign: bool = False) -> str:
    return "n/a" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _interval_cell(stats: dict | None, sign: bool = False) -> str:
    if not stats or "mean" not in stats:
        return "n/a"
    text = _pct(stats["mean"], sign)
    if stats.get("low") is not None:
        text += f" [{_pct(stats['low'], sign)}, {_pct(stats['high'], sign)}]"
    if "seeds_better" in stats:
        text += f" ({stats['seeds_better']}/{stats['n']})"
    return text


def report(payload: dict) -> str:
    """The markdown report: one table per source (accuracy and paired differences, in points, with 95% intervals)."""
    settings, summary = payload["settings"], payload["summary"]
    methods = settings["methods"]
    lines = [
        "## When does SMILE help? (shots curve)",
        "",
        f"Target: {settings['target']}; {settings['max_steps']} steps of the reference recipe at every shot level "
        "(SGD Nesterov 0.9, lr 0.01, wd 1e-4, batch 48, lr x0.1 at 2/3). Top-1 accuracy in %, mean over seeds "
        "[95% t-interval]; differences are paired per seed (same subset, head and data order), mean [95% t-interval "
        "over seeds] (seeds where SMILE is higher / seeds).",
        "",
    ]
    for source, info in settings["sources"].items():
        header = ["shots", *methods, *(f"{a} − {b}" for a, b in COMPARISONS)]
        rows = []
        for s in info["shots"]:
            cell = summary[source].get(shot_label(s), {})
            rows.append([shot_label(s), *(_interval_cell(cell.get(m)) for m in methods),
                         *(_interval_cell(cell.get(f"{a} - {b}"), sign=True) for a, b in COMPARISONS)])  # fmt: skip
        lines += [f"### Source `{info['path']}` ({info['parameters']:,} parameters), seeds "
                  f"{', '.join(map(str, info['seeds']))}", "", markdown_table(header, rows), ""]  # fmt: skip
    return "\n".join(lines)


def plot(payload: dict, path: str, x_label: str = "training images per class") -> None:
    """Top row: accuracy against shots per method (band: 95% t-interval of the mean); bottom row: the paired
    differences with their intervals, over `x_label`. One column per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings, summary = payload["settings"], payload["summary"]
    sources, labels = list(settings["sources"]), [shot_label(s) for s in settings["shots"]]
    xs = list(range(len(labels)))
    colors = {"finetune": "black", "mixup": "tab:blue", "smile": "crimson"}
    fig, axes = plt.subplots(2, len(sources), figsize=(6 * len(sources), 8), squeeze=False, sharex=True)
    for col, source in enumerate(sources):
        top, bottom = axes[0][col], axes[1][col]
        for m in settings["methods"]:
            cells = [summary[source].get(label, {}).get(m) for label in labels]
            pts = [(x, c) for x, c in zip(xs, cells) if c]
            if not pts:
                continue
            color = colors.get(m)
            top.plot([x for x, _ in pts], [100 * c["mean"] for _, c in pts], marker="o", color=color, label=m)
            banded = [(x, c) for x, c in pts if c["low"] is not None]
            if banded:
                top.fill_between([x for x, _ in banded], [100 * c["low"] for _, c in banded],
                                 [100 * c["high"] for _, c in banded], color=color, alpha=0.15)  # fmt: skip
        for i, ((a, b), color) in enumerate(zip(COMPARISONS, ("black", "tab:blue"))):
            cells = [summary[source].get(label, {}).get(f"{a} - {b}") for label in labels]
            pts = [(x + 0.08 * (2 * i - 1), c) for x, c in zip(xs, cells) if c and c.get("differences")]
            for x, c in pts:
                bottom.scatter([x] * len(c["differences"]), [100 * d for d in c["differences"]], s=8, color=color,
                               alpha=0.35)  # fmt: skip
            yerr = [[100 * (c["mean"] - c["low"]) if c["low"] is not None else 0 for _, c in pts],
                    [100 * (c["high"] - c["mean"]) if c["low"] is not None else 0 for _, c in pts]]  # fmt: skip
            bottom.errorbar([x for x, _ in pts], [100 * c["mean"] for _, c in pts], yerr=yerr, fmt="s", capsize=4,
                            color=color, label=f"{a} − {b}")  # fmt: skip
        bottom.axhline(0.0, color="gray", linewidth=1)
        info = settings["sources"][source]
        top.set_title(f"{source} ({info['parameters'] // 1000}k params) → {settings['target']}, "
                      f"{len(info['seeds'])} seeds")  # fmt: skip
        top.set_ylabel("top-1 accuracy (%), mean and 95% interval")
        bottom.set_ylabel("paired difference (points), per seed and 95% interval")
        bottom.set_xlabel(x_label)
        bottom.set_xticks(xs, labels)
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_sources(text: str) -> dict[str, str]:
    """`"a=path,b=path"` -> {"a": path, "b": path}; a bare path is named after its folder."""
    sources = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, _, path = item.rpartition("=")
        sources[name or os.path.basename(os.path.normpath(path))] = path
    return sources


def default_sources() -> str:
    paths = [SOURCE_CHECKPOINT] + (
        [LARGER_SOURCE] if os.path.isfile(os.path.join(LARGER_SOURCE, "config.json")) else []
    )
    return ",".join(paths)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--shots", default=",".join(map(shot_label, SHOTS)), help="per class; 'full': the whole split")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--sources", default=None, help="name=path,... (default: bundled + fmnist-resnet-small)")
    parser.add_argument("--source_seeds", default="", help="name=0,1,2;... : fewer seeds for a source")
    parser.add_argument("--source_shots", default="", help="name=1,5,full;... : fewer shot levels for a source")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    grid.add_output_arguments(parser, os.path.join(RESULTS_DIR, "shots_curve"))
    return parser.parse_args(argv)


def parse_shots(text: str) -> list[int | None]:
    return [None if s.strip() == "full" else int(s) for s in text.split(",")]


def per_source(text: str) -> dict[str, str]:
    """`"a=0,1;b=2"` -> {"a": "0,1", "b": "2"}."""
    return dict(item.split("=", 1) for item in filter(None, (i.strip() for i in text.split(";"))))


def plan(opts) -> tuple[dict, list[dict]]:
    """The settings and every job of the grid (source x shots x seed x method)."""
    shots, seeds = parse_shots(opts.shots), [int(s) for s in opts.seeds.split(",")]
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    fewer_seeds, fewer_shots = per_source(opts.source_seeds), per_source(opts.source_shots)
    sources = {}
    for name, path in parse_sources(opts.sources or default_sources()).items():
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise SystemExit(f"No source checkpoint at {path}: train it with scripts/train_source_model.py.")
        with open(os.path.join(path, "training_results.json"), encoding="utf-8") as f:
            parameters = json.load(f)["num_parameters"]
        source_seeds = [int(s) for s in fewer_seeds[name].split(",")] if name in fewer_seeds else seeds
        source_shots = parse_shots(fewer_shots[name]) if name in fewer_shots else shots
        sources[name] = {"path": os.path.relpath(path, REPO_ROOT), "parameters": parameters, "seeds": source_seeds,
                         "shots": source_shots}  # fmt: skip
    jobs = [
        {"source": name, "target": opts.target, "shots": s, "seed": seed, "method": m, "max_steps": opts.max_steps,
         "checkpoint": os.path.join(REPO_ROOT, info["path"]), "threads": 1}
        for name, info in sources.items() for seed in info["seeds"] for s in info["shots"] for m in methods
    ]  # fmt: skip
    settings = {"target": opts.target, "shots": shots, "seeds": seeds, "methods": methods, "sources": sources,
                "max_steps": opts.max_steps, "workers": opts.workers,
                "interval": "95% Student-t over seeds: mean ± t(0.975, n−1)·sd/√n; differences paired per seed"}  # fmt: skip
    return settings, jobs


def run_job(job: dict) -> dict:
    """`benchmarks.accuracy.run_one`, tagged with the source's name."""
    return {**run_one(job), "source": job["source"], "shots": job["shots"]}


def key(run: dict) -> tuple:
    return run["source"], run["target"], run["shots"], run["seed"], run["method"]


GRID = grid.Grid(
    module="shots_curve", plan=plan, run_job=run_job, key=key, summarise=summarise_grid, report=report, plot=plot,
    setup=register_targets,
)  # fmt: skip


def main(argv=None) -> dict:
    return grid.main(GRID, parse_args(argv), argv)


if __name__ == "__main__":
    main()
