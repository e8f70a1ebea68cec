# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The accuracy benchmark's summary (mean and spread over seeds), SMILE against fine-tuning, the plot and the
markdown report."""

from __future__ import annotations

import os

from .common import accuracy_table, mean_std


def summarise(runs: list[dict], targets, shots, methods) -> dict:
    """`summary[target][str(shots)][method] = {"accuracy": [...], "ece": [...], "seeds": [...]}` (seed order)."""
    summary = {t: {str(s): {} for s in shots} for t in targets}
    for run in sorted(runs, key=lambda r: r["seed"]):
        cell = summary[run["target"]][str(run["shots"])].setdefault(
            run["method"], {"accuracy": [], "ece": [], "seeds": []}
        )
        cell["accuracy"].append(run["accuracy"])
        cell["ece"].append(run["ece"])
        cell["seeds"].append(run["seed"])
    for t in targets:
        for s in shots:
            cells = summary[t][str(s)]
            for method, cell in cells.items():
                cell["accuracy_mean"], cell["accuracy_std"] = mean_std(cell["accuracy"])
                cell["ece_mean"], cell["ece_std"] = mean_std(cell["ece"])
    return summary


def smile_vs_finetune(summary: dict, targets, shots, smile_methods, base: str = "finetune") -> list[dict]:
    """Per target and shot level: SMILE's mean accuracy minus fine-tuning's (`base`'s), and the per-seed (paired)
    differences."""
    rows = []
    for t in targets:
        for s in shots:
            cells = summary[t][str(s)]
            reference = cells.get(base)
            for m in smile_methods:
                if reference is None or m not in cells:
                    continue
                paired = dict(zip(reference["seeds"], reference["accuracy"]))
                diffs = [a - paired[seed] for seed, a in zip(cells[m]["seeds"], cells[m]["accuracy"]) if seed in paired]
                rows.append({
                    "target": t, "shots": s, "method": m,
                    "smile_mean": cells[m]["accuracy_mean"], "finetune_mean": reference["accuracy_mean"],
                    "difference": cells[m]["accuracy_mean"] - reference["accuracy_mean"],
                    "paired_differences": diffs, "seeds_better": sum(d > 0 for d in diffs), "seeds": len(diffs),
                })  # fmt: skip
    return rows


def plot(summary: dict, targets, shots, methods, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, axes = plt.subplots(1, len(targets), figsize=(6.5 * len(targets), 6.4), squeeze=False)
    cmap = plt.get_cmap("tab20")
    markers = "os^vD<>ph*XP"
    for ax, target in zip(axes[0], targets):
        for i, method in enumerate(methods):
            xs, ys, es = [], [], []
            jitter = 1.0 + 0.012 * (i - (len(methods) - 1) / 2)  # side by side, so that error bars stay readable
            for s in shots:
                cell = summary[target][str(s)].get(method)
                if cell:
                    xs.append(s * jitter)
                    ys.append(100 * cell["accuracy_mean"])
                    es.append(100 * cell["accuracy_std"])
            if not xs:
                continue
            style = dict(color=cmap(i % 20), marker=markers[i % len(markers)], linewidth=1.2, markersize=5, alpha=0.9)
            if method == "finetune":
                style.update(color="black", linestyle="--", linewidth=2.2, alpha=1.0)
            elif method.startswith("smile"):
                style.update(color="crimson" if method == "smile" else "darkorange", linewidth=2.6, alpha=1.0)
            ax.errorbar(xs, ys, yerr=es, capsize=3, label=method, **style)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(list(shots))
        ax.set_xticklabels([str(s) for s in shots])
        ax.set_xlabel("training images per class (shots)")
        ax.set_ylabel("top-1 accuracy (%), mean ± std over seeds")
        ax.set_title(f"fmnist-resnet-tiny → {target}")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(payload: dict) -> str:
    settings = payload["settings"]
    targets, shots, methods = settings["targets"], settings["shots"], settings["methods"]
    summary = payload["summary"]
    lines = [
        "## Few-shot transfer accuracy (accuracy benchmark)",
        "",
        f"Source: `checkpoints/fmnist-resnet-tiny` (Fashion-MNIST). Targets: {', '.join(targets)}; "
        f"{', '.join(map(str, shots))} training images per class; seeds {', '.join(map(str, settings['seeds']))}; "
        f"{settings['max_steps']} steps of the reference recipe (SGD Nesterov 0.9, lr 0.01, wd 1e-4, batch 48, "
        "lr x0.1 at 2/3) for every method. Cells: top-1 accuracy mean ± std over seeds / mean ECE, in %; best mean "
        "of each column in bold.",
        "",
        accuracy_table(summary, targets, shots, methods),
        "",
    ]
    rows = payload["smile_vs_finetune"]
    if rows:
        lines += ["SMILE − fine-tuning (mean top-1, points; per-seed paired differences):", ""]
        for r in rows:
            diffs = ", ".join(f"{100 * d:+.1f}" for d in r["paired_differences"])
            verdict = "above" if r["difference"] > 0 else "NOT above"
            lines.append(
                f"- {r['target']}, {r['shots']} shots, {r['method']}: {100 * r['difference']:+.2f} ({verdict} "
                f"fine-tuning; seeds better {r['seeds_better']}/{r['seeds']}: {diffs})"
            )
        lines.append("")
    return "\n".join(lines)
