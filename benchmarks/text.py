# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Few-shot text classification offline, on real human-written text: fine-tuning, mixup and SMILE from the bundled
tiny BERT (`checkpoints/debian-bert-tiny`, pre-trained on Debian package descriptions of 12 archive sections) to 6
other sections (`--dataset debian_sections`: games, sound, graphics, mail, database, math; 50 test descriptions per
section), at a few training descriptions per section.

For each shot level and seed, every method trains from the same checkpoint with the same optimiser and budget
(AdamW, lr `--learning_rate`, linear decay, batch 16, `--max_steps` steps); the seed draws the few-shot subset, the
new head, the data order and the mixes, and the methods share it. The mixes are on the token embeddings (the
trainer's text path). Top-1 accuracy is measured on the 300 test descriptions; differences are paired per seed with
the 95% Student-t interval over seeds of `benchmarks/shots_curve.py`:

    d_s = acc_SMILE(s) - acc_other(s),   mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)

    python -m benchmarks.text                   # -> results/text.{json,md,png}
    python -m benchmarks.text --report_only
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from . import grid
from .accuracy import quiet
from .common import REPO_ROOT, RESULTS_DIR, markdown_table
from .shots_curve import COMPARISONS, _interval_cell, plot, shot_label, summarise_grid

TEXT_SOURCE = os.path.join(REPO_ROOT, "checkpoints", "debian-bert-tiny")
TARGET = "debian_sections"
SHOTS = (5, 10, 20)
SEEDS = (0, 1, 2, 3, 4)
METHODS = ("finetune", "mixup", "smile")
MAX_STEPS = 150
LEARNING_RATE = 2e-3
BATCH_SIZE = 16
MAX_SEQ_LENGTH = 64
X_LABEL = "training descriptions per section"
"""The plot's x-axis: the shots are package descriptions per Debian section."""


def run_one(job: dict) -> dict:
    """Train one (shots, seed, method) on the target's few-shot subset and evaluate it on the test descriptions."""
    import transformers
    from transformers import AutoTokenizer, set_seed

    from smile_hf import SmileTrainer, SmileTrainingArguments
    from smile_hf.data import prepare_text_datasets, text_collator, tokenize_data
    from smile_hf.metrics import ClassificationMetrics

    torch.set_num_threads(job["threads"])
    quiet()
    data = prepare_text_datasets(dataset=job["target"], train_samples_per_class=job["shots"], seed=job["seed"])
    tokenizer = AutoTokenizer.from_pretrained(job["checkpoint"])
    tokenize_data(data, tokenizer, MAX_SEQ_LENGTH)
    set_seed(job["seed"])
    with tempfile.TemporaryDirectory(prefix="smile-text-") as output_dir:
        args = SmileTrainingArguments(
            output_dir=output_dir, method=job["method"], max_steps=job["max_steps"], seed=job["seed"],
            learning_rate=job["learning_rate"], per_device_train_batch_size=BATCH_SIZE,
            per_device_eval_batch_size=300, eval_strategy="no", save_strategy="no", logging_strategy="no",
            report_to="none", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
            model_init_kwargs={"num_labels": len(data.label_names), "id2label": data.id2label},
        )  # fmt: skip
        trainer = SmileTrainer(  # the student: the checkpoint with a new head for the 6 sections
            model=job["checkpoint"], args=args, train_dataset=data.train, eval_dataset=data.eval,
            data_collator=text_collator(tokenizer), processing_class=tokenizer,
            compute_metrics=ClassificationMetrics(top_k=(1,)),
        )  # fmt: skip
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        start = time.perf_counter()
        train_result = trainer.train()
        seconds = time.perf_counter() - start
        metrics = trainer.evaluate()
    return {
        "source": job["source"], "target": job["target"], "shots": job["shots"], "seed": job["seed"],
        "method": job["method"], "accuracy": float(metrics["eval_accuracy"]), "ece": float(metrics["eval_ece"]),
        "eval_examples": int(metrics["eval_num_samples"]), "train_examples": len(data.train),
        "train_loss": float(train_result.training_loss), "train_seconds": round(seconds, 2),
        "steps": int(trainer.state.global_step),
    }  # fmt: skip


def key(run: dict) -> tuple:
    return run["shots"], run["seed"], run["method"]


def report(payload: dict) -> str:
    """The markdown report: accuracy per method and the paired differences, in points, with 95% intervals."""
    settings, summary = payload["settings"], payload["summary"]
    methods, source = settings["methods"], next(iter(settings["sources"]))
    header = ["shots", *methods, *(f"{a} − {b}" for a, b in COMPARISONS)]
    rows = []
    for s in settings["shots"]:
        cell = summary.get(source, {}).get(shot_label(s), {})
        rows.append([shot_label(s), *(_interval_cell(cell.get(m)) for m in methods),
                     *(_interval_cell(cell.get(f"{a} - {b}"), sign=True) for a, b in COMPARISONS)])  # fmt: skip
    info = settings["sources"][source]
    return "\n".join([
        "## Few-shot text classification offline (Debian package descriptions)",
        "",
        f"Source `{info['path']}` ({info['parameters']:,} parameters, pre-trained on 12 archive sections) → "
        f"`--dataset {settings['target']}` (6 other sections, 300 test descriptions). AdamW, lr "
        f"{settings['learning_rate']}, batch {settings['batch_size']}, {settings['max_steps']} steps, at most "
        f"{settings['max_seq_length']} tokens; seeds {', '.join(map(str, info['seeds']))}. Top-1 accuracy in %, mean "
        "over seeds [95% t-interval]; differences paired per seed (same subset, head and data order), mean [95% "
        "t-interval] (seeds where SMILE is higher / seeds).",
        "",
        markdown_table(header, rows),
        "",
    ])  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)), help="training descriptions per section")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--checkpoint", default=TEXT_SOURCE)
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    parser.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    grid.add_output_arguments(parser, os.path.join(RESULTS_DIR, "text"))
    return parser.parse_args(argv)


def plan(opts) -> tuple[dict, list[dict]]:
    """The settings and every job (shots x seed x method, from the one checkpoint)."""
    with open(os.path.join(opts.checkpoint, "training_results.json"), encoding="utf-8") as f:
        parameters = json.load(f)["num_parameters"]
    shots, seeds = [int(s) for s in opts.shots.split(",")], [int(s) for s in opts.seeds.split(",")]
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    name = os.path.basename(os.path.normpath(opts.checkpoint))
    settings = {
        "target": TARGET, "shots": shots, "seeds": seeds, "methods": methods, "max_steps": opts.max_steps,
        "learning_rate": opts.learning_rate, "batch_size": BATCH_SIZE, "max_seq_length": MAX_SEQ_LENGTH,
        "sources": {name: {"path": os.path.relpath(opts.checkpoint, REPO_ROOT), "parameters": parameters,
                           "seeds": seeds, "shots": shots}},
        "workers": opts.workers,
        "interval": "95% Student-t over seeds: mean ± t(0.975, n−1)·sd/√n; differences paired per seed",
    }  # fmt: skip
    jobs = [
        {"source": name, "target": TARGET, "shots": s, "seed": seed, "method": m, "max_steps": opts.max_steps,
         "learning_rate": opts.learning_rate, "checkpoint": opts.checkpoint, "threads": 1}
        for s in shots for seed in seeds for m in methods  # a shot level's seeds first: a cut run reports whole levels
    ]  # fmt: skip
    return settings, jobs


def plot_text(payload: dict, path: str) -> None:
    """The shots-curve plot over the text task's shots."""
    plot(payload, path, x_label=X_LABEL)


GRID = grid.Grid(
    module="text", plan=plan, run_job=run_one, key=key, summarise=summarise_grid, report=report, plot=plot_text
)


def main(argv=None) -> dict:
    return grid.main(GRID, parse_args(argv), argv)


if __name__ == "__main__":
    main()
