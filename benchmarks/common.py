# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What the benchmark scripts share: the list of methods, summary statistics, the environment record and the
markdown table of the accuracy benchmarks (`accuracy.py` and `paper_table.py` print the same layout)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_CHECKPOINT = os.path.join(REPO_ROOT, "checkpoints", "fmnist-resnet-tiny")
"""The bundled source checkpoint (a tiny ResNet pre-trained on Fashion-MNIST)."""

REGULARIZERS = ("l2sp", "delta", "bss", "rifle", "cotuning")
METHODS = (
    "finetune",
    "mixup",
    "cutmix",
    *REGULARIZERS,
    *(f"{r}+mixup" for r in REGULARIZERS),
    "smile",
)
"""Every method the benchmarks compare: plain fine-tuning, the two mixing strategies, each regulariser alone and
with mixup (as in the paper's tables), and SMILE."""


def available_methods(requested: Sequence[str] = METHODS) -> tuple[list[str], list[str]]:
    """(the requested methods this install of smile_hf knows, the ones it does not)."""
    from smile_hf.methods import parse_method

    known, missing = [], []
    for method in requested:
        try:
            parse_method(method)
            known.append(method)
        except ValueError:
            missing.append(method)
    return known, missing


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, min and max of `values` (the spread we report)."""
    array = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(array)),
        "p25": float(np.percentile(array, 25)),
        "p75": float(np.percentile(array, 75)),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return float(statistics.fmean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0


def environment() -> dict:
    """Where a benchmark ran: enough to tell two result files apart."""
    import transformers

    import smile_hf

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "smile_hf": smile_hf.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def publish(text: str, payload: dict, output: str | None, markdown: str | None) -> None:
    """Print a benchmark's report `text`, then write `payload` as JSON to `output` and `text` to `markdown` (each
    only when given)."""
    print(text)
    if output:
        write_json(output, payload)
    if markdown:
        write_text(markdown, text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub markdown table; `align` is one character per column, `l` or `r` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_table(results: dict, targets: Sequence[str], shots: Sequence, methods: Sequence[str]) -> str:
    """The accuracy table: one row per method, for each (target, shot level) a `mean ± std` top-1 (in %) and the mean
    ECE (in %); the best mean of each column in bold.

    `results[target][str(shot)][method]` holds `{"accuracy": [...], "ece": [...]}` (one value per seed, in [0, 1]).
    """
    columns = [(t, str(s)) for t in targets for s in shots if str(s) in results.get(t, {})]
    header = ["method"] + [f"{t} {s} top-1 / ECE" for t, s in columns]
    best = {}
    for t, s in columns:
        means = [mean_std(results[t][s][m]["accuracy"])[0] for m in methods if m in results[t][s]]
        best[(t, s)] = max(means) if means else None
    rows = []
    for method in methods:
        row = [method]
        for t, s in columns:
            cell = results[t][s].get(method)
            if not cell or not cell["accuracy"]:
                row.append("n/a")
                continue
            mean, std = mean_std(cell["accuracy"])
            ece = mean_std(cell["ece"])[0]
            text = f"{100 * mean:.1f} ± {100 * std:.1f}"
            if best[(t, s)] is not None and abs(mean - best[(t, s)]) < 1e-12:
                text = f"**{text}**"
            row.append(f"{text} / {100 * ece:.1f}")
        rows.append(row)
    return markdown_table(header, rows)


# ---- shared by the speed benchmarks (speed.py, speed_gpu.py) ------------------------------------------------------

TARGET_RATIO = 1.35
"""The target of the speed benchmarks: a SMILE step at most this many fine-tuning steps (CPU and GPU presets)."""


def device_line(payload: dict, versions: str = "") -> str:
    """`Device: ...; torch ..., transformers ...<versions>; precision: ...` of a report."""
    env, settings = payload["environment"], payload["settings"]
    where = f" ({env['cuda']})" if env.get("cuda") else f", {env['torch_threads']} torch thread(s), {env['cpu_count']} cores"
    precision = "bf16 autocast" if settings["bf16"] else "fp32"
    return (
        f"Device: {settings['device']}{where}; torch {env['torch']}, transformers {env['transformers']}{versions}; "
        f"precision: {precision}"
    )


def fmt_q(q: dict, digits: int = 2) -> str:
    """`median [p25–p75]` of a [`quantiles`] dict."""
    return f"{q['median']:.{digits}f} [{q['p25']:.{digits}f}–{q['p75']:.{digits}f}]"


def log(message: str) -> None:
    """A progress line on stderr, with the time."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
