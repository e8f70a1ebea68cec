# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The curves of a comparison (`--plot_curves`): every run's loss terms and evaluation accuracy over the steps, read
from its log history, written as JSON and drawn as a PNG (mean over seeds, min-max band)."""

from __future__ import annotations

import json
import os

from ..curve_styles import label_styles
from ..plotting import pyplot, save_figure

CURVE_SERIES = {
    "loss_main": "loss_main: cross-entropy (SMILE's: of mixed images)",
    "loss_aux": "loss_aux: source head vs teacher (SMILE)",
    "loss_reg": "loss_reg: feature maps vs teacher (SMILE)",
    "loss_cls": "loss_cls: heads' weight penalty (SMILE)",
    "eval_accuracy": "eval accuracy (%)",
}
"""The panels of `--plot_curves` and their titles, in this order (the `loss_<term>` of other methods follow)."""


def training_curves(log_history: list[dict]) -> dict[str, dict[str, list]]:
    """The curves of one run, read from its `Trainer.state.log_history`: every loss term of the training logs
    (`loss_<term>`, logged by [`SmileTrainer.log`]) and the accuracy of every evaluation (`eval_accuracy`).

    Returns:
        `dict[str, dict[str, list]]`: series name -> `{"steps": [...], "values": [...]}`, in step order; a step
        logged twice (the final evaluation repeats the last periodic one) keeps its last value.
    """
    points: dict[str, dict[int, float]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("loss_") or key == "eval_accuracy":
                points.setdefault(key, {})[int(entry["step"])] = float(value)
    return {
        key: {"steps": sorted(by_step), "values": [by_step[step] for step in sorted(by_step)]}
        for key, by_step in points.items()
    }


def curve_series(runs: list[dict]) -> list[str]:
    """The series found in `runs`, [`CURVE_SERIES`] first, then any other in name order."""
    found = {name for run in runs for name in run["curves"]}
    return [name for name in CURVE_SERIES if name in found] + sorted(found - set(CURVE_SERIES))


def mean_band(curves: list[dict[str, list]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps logged by every curve of `curves` (one per seed), and the mean, min and max of their values there."""
    steps = sorted(set.intersection(*(set(c["steps"]) for c in curves)))
    values = [[dict(zip(c["steps"], c["values"]))[step] for c in curves] for step in steps]
    return steps, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def draw_panel(ax, runs: list[dict], name: str) -> None:
    """One panel of [`plot_curves`]: series `name` of every run label (mean over seeds, min-max band)."""
    scale = 100.0 if name == "eval_accuracy" else 1.0
    styles = label_styles(list(dict.fromkeys(run["label"] for run in runs)))  # one colour per label
    for label in styles:
        curves = [run["curves"][name] for run in runs if run["label"] == label and name in run["curves"]]
        if not curves:
            continue
        steps, mean, low, high = mean_band(curves)
        line = ax.plot(steps, [scale * v for v in mean], label=label, **styles[label])[0]
        low, high = [scale * v for v in low], [scale * v for v in high]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
    ax.set_title(CURVE_SERIES.get(name, name), fontsize=10)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(runs: list[dict], path: str, title: str = "") -> str:
    """Draw one panel per series of [`curve_series`] (accuracy in %): for each run label, the mean over its seeds
    and the band between their min and max. `runs`: `{"label", "seed", "curves"}` dicts ([`training_curves`]).
    Writes the PNG `path` and returns it."""
    plt = pyplot("Plotting the curves")
    series = curve_series(runs)
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, series):
        draw_panel(ax, runs, name)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    return save_figure(fig, path, title)


def write_curves(runs: list[dict], path: str, title: str = "") -> tuple[str, str]:
    """Write the curves of `runs` as JSON (`path` with the extension `.json`: `{"title", "runs"}`), then plot them
    into the PNG `path` ([`plot_curves`]). Returns both paths."""
    json_path = os.path.splitext(path)[0] + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"title": title, "runs": runs}, f, indent=1)
    return json_path, plot_curves(runs, path, title)
