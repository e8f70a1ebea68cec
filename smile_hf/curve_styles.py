# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Line styles of the run labels in training-curve plots (`examples/compare_methods.py --plot_curves`): fixed ones
for the demo's labels, and a colour no other label of the plot has for every other label."""

from __future__ import annotations

from collections.abc import Sequence

LABEL_STYLES: dict[str, dict[str, str]] = {
    "scratch": {"color": "tab:gray", "linestyle": ":"},
    "finetune": {"color": "tab:blue", "linestyle": "--"},
    "smile": {"color": "tab:red", "linestyle": "-"},
}
"""Line style of the run labels of the demo."""

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")  # fmt: skip
"""matplotlib's default colour cycle (tab10), by name."""

LINESTYLES = ("-", "--", "-.", ":")


def label_styles(labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """A line style for each of `labels` (the labels of one plot, kept in their order): [`LABEL_STYLES`] for the demo's labels, and for
    every other label, in order, the next colour of [`PALETTE`] that no label of the plot has taken, drawn solid;
    once the colours run out, the (colour, line style) pairs no label has taken. No two labels share a style (up
    to the 40 pairs there are)."""
    styles = {label: dict(LABEL_STYLES[label]) for label in labels if label in LABEL_STYLES}
    used = {s["color"] for s in styles.values()}
    taken = {(s["color"], s["linestyle"]) for s in styles.values()}
    candidates = [(c, "-") for c in PALETTE if c not in used]
    candidates += [(c, ls) for ls in LINESTYLES[1:] for c in PALETTE if (c, ls) not in taken]
    others = [label for label in dict.fromkeys(labels) if label not in styles]
    for i, label in enumerate(others):
        colour, linestyle = candidates[i % len(candidates)]
        styles[label] = {"color": colour, "linestyle": linestyle}
    return {label: styles[label] for label in dict.fromkeys(labels)}  # in the order of `labels`
