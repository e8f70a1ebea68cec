# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a hyperparameter search leaves behind: `hp_search.json` (every trial's values, validation metric and
duration, the best values, the space and the validation split), `hp_search.png` beside it (the metric against each
hyperparameter) and the line of the model card."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RESULTS_FILE = "hp_search.json"
PLOT_FILE = "hp_search.png"


@dataclass
class TrialRecord:
    """One trial: its number, its values, its validation metric (None unless it completed), its state
    (`COMPLETE`, `FAIL`...) and how long it took (seconds)."""

    number: int
    values: dict[str, Any]
    value: float | None
    state: str = "COMPLETE"
    duration_s: float | None = None


@dataclass
class SearchRecord:
    """A search: how it ran (backend, objective and its direction, trials asked for, space, method, validation split,
    where the study is stored), its trials and its best one."""

    backend: str
    objective: str
    direction: str
    trials_requested: int
    space: dict[str, dict[str, Any]]
    method: str
    validation_split: dict | None = None
    study: str | None = None
    trials: list[TrialRecord] = field(default_factory=list)
    best_number: int | None = None
    best_values: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for the model card and `results.json`: backend, trials, space, objective, validation split, best."""
        completed = sum(t.state == "COMPLETE" for t in self.trials)
        split = (self.validation_split or {}).get("description", "a validation split held out of the training data")
        best = ", ".join(f"{k}={_short(v)}" for k, v in self.best_values.items())
        return (
            f"{self.backend} search, {completed} trials over {', '.join(self.space)}, selecting the best validation "
            f"{'top-1 accuracy' if self.objective == 'accuracy' else 'loss'} on {split}; best values: {best} "
            f"(validation {self.objective} {_short(self.best_value)}), then trained once with them"
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_search_outputs(record: SearchRecord, output_dir: str) -> str:
    """Write `hp_search.json` and (with matplotlib) `hp_search.png` into `output_dir`; return the JSON's path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RESULTS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record.to_dict(), f, indent=2, default=str)
    try:
        plot_search(record, os.path.join(output_dir, PLOT_FILE))
    except ImportError:
        logger.warning(f"matplotlib is not installed: no {PLOT_FILE} (pip install matplotlib).")
    return path


def plot_search(record: SearchRecord, path: str) -> str:
    """One panel per hyperparameter: the validation metric of every completed trial against its value (log axis
    for a log-scale dimension), the best trial circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record.space)
    done = [t for t in record.trials if t.value is not None]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs = [t.values.get(name) for t in done]
        ax.scatter([str(x) if isinstance(x, (str, bool)) else x for x in xs], [t.value for t in done], s=18)
        best = next((t for t in done if t.number == record.best_number), None)
        if best is not None and name in best.values:
            x = best.values[name]
            ax.scatter([str(x) if isinstance(x, (str, bool)) else x], [best.value], s=80, facecolors="none", edgecolors="red")
        if record.space[name].get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"validation {record.objective}")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{record.method}: {len(done)} trials ({record.backend})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
