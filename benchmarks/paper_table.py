# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The paper's setting: ResNet-50 pre-trained on ImageNet (`microsoft/resnet-50` from the Hub) fine-tuned on
CUB-200-2011, Stanford Cars and FGVC-Aircraft (full training sets) with every method and the SMILE reference
recipe, `SmileTrainingArguments(reference_recipe=True, max_steps=9000)`: SGD (Nesterov momentum 0.9), lr 0.01,
weight decay 1e-4, batch 48, lr x0.1 after 2/3 of the steps, no gradient clipping; SMILE's last 1/9 of the steps
plain fine-tuning; the baselines' weights of the reference's task_config.ini per dataset (`DatasetPreset.recipe`).
Images: resize to 256 x 256 (CUB: the shorter side to 256, as the reference), random crop 224 + horizontal flip;
evaluation: center crop 224 (`smile_hf.data`, the reference's transforms). The data come from the Hub through the `smile_hf.data` presets
`cub200`, `stanford_cars` and `fgvc_aircraft`.

Prints the accuracy benchmark's table (top-1 mean ± std over seeds / ECE, per dataset) and, next to it, the
numbers of the SMILE reference README (ResNet-50: L2 fine-tuning -> SMILE, CUB 80.79 -> 82.38, Stanford Cars
90.72 -> 91.74, FGVC-Aircraft 86.93 -> 89.00). Writes JSON and markdown to benchmarks/results/ (paper_table.*).

This needs the Hub (the checkpoint and three datasets, ~3 GB) and a GPU: 9000 steps of batch 48 at 224 x 224 is
about 40 min per run on one recent GPU with `--bf16`, so the default 14 methods x 3 datasets x 1 seed is ~1 GPU-day
(`--methods finetune,smile` for the reference's pair). Offline it stops at once with a message saying so.

    python -m benchmarks.paper_table --bf16                                  # every method, seed 0
    python -m benchmarks.paper_table --methods finetune,smile --seeds 0,1,2 --bf16
    python -m benchmarks.paper_table --datasets cub200 --max_steps 90 --methods finetune,smile   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .common import (
    METHODS,
    RESULTS_DIR,
    accuracy_table,
    available_methods,
    environment,
    markdown_table,
    mean_std,
    write_json,
    write_text,
)

CHECKPOINT = "microsoft/resnet-50"
DATASETS = ("cub200", "stanford_cars", "fgvc_aircraft")
DATASET_NAMES = {"cub200": "CUB-200-2011", "stanford_cars": "Stanford Cars", "fgvc_aircraft": "FGVC-Aircraft"}
REFERENCE = {  # SMILE reference README (PaddlePaddle/Research, CV/SMILE), ResNet-50 ImageNet, top-1 %
    "cub200": {"finetune": 80.79, "smile": 82.38},
    "stanford_cars": {"finetune": 90.72, "smile": 91.74},
    "fgvc_aircraft": {"finetune": 86.93, "smile": 89.00},
}
MAX_STEPS = 9000
SHOTS = "full"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class OfflineError(SystemExit):
    pass


def check_hub(checkpoint: str, datasets: list[str], token) -> None:
    """Fail at once, with one clear message, when the Hub cannot be reached (offline mode or no network)."""
    from huggingface_hub import constants

    from smile_hf.data import get_preset

    hint = (
        f"benchmarks/paper_table.py needs the Hugging Face Hub: the checkpoint {checkpoint} and the datasets "
        f"{', '.join(get_preset(d).hub_id for d in datasets)} are downloaded (~3 GB) on first use. "
    )
    if constants.HF_HUB_OFFLINE:
        raise OfflineError(hint + "HF_HUB_OFFLINE is set: unset it on a machine with network access (and a GPU), or "
                           "run the offline benchmark instead: python -m benchmarks.accuracy")  # fmt: skip
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.model_info(checkpoint, timeout=15)
        for name in datasets:
            api.dataset_info(get_preset(name).hub_id, timeout=15)
    except Exception as error:  # no network, DNS, proxy, 401/404: say what and why, no traceback
        text = " ".join(str(error).split())[:300]
        raise OfflineError(
            hint + f"It could not be reached ({type(error).__name__}: {text}). Run this on a machine with network "
            "access and a GPU, or run the offline benchmark instead: python -m benchmarks.accuracy"
        ) from None


def run_one(job: dict) -> dict:
    """Train one (dataset, seed, method) with the reference recipe and evaluate it on the full test set."""
    import torch
    import transformers
    from transformers import AutoImageProcessor, set_seed

    from smile_hf import SmileTrainer, SmileTrainingArguments
    from smile_hf.data import TransformConfig, get_preset, prepare_datasets, set_transforms
    from smile_hf.metrics import ClassificationMetrics

    transformers.logging.set_verbosity_warning()
    seed, method = job["seed"], job["method"]
    processor = AutoImageProcessor.from_pretrained(job["checkpoint"], token=job["token"])
    data = prepare_datasets(dataset=job["dataset"], seed=seed, cache_dir=job["cache_dir"], token=job["token"])
    # the baselines' weights and the resize of the reference's task_config.ini for this dataset (the preset's)
    reference = dict(get_preset(job["dataset"]).recipe.reference_values)
    keep_aspect = reference.pop("keep_aspect", False)
    set_transforms(data, TransformConfig.from_image_processor(processor, keep_aspect=keep_aspect))  # 256, crop 224, flip
    set_seed(seed)
    output_dir = os.path.join(job["output_dir"], f"{job['dataset']}-{method.replace('+', '_')}-seed{seed}")
    args = SmileTrainingArguments(
        output_dir=output_dir,
        method=method,
        reference_recipe=True,
        max_steps=job["max_steps"],
        seed=seed,
        bf16=job["bf16"],
        per_device_eval_batch_size=128,
        eval_strategy="no",
        save_strategy="steps",
        save_steps=1000,
        save_total_limit=1,
        logging_steps=100,
        report_to="none",
        dataloader_num_workers=job["num_workers"],
        dataloader_drop_last=True,
        model_init_kwargs={"num_labels": len(data.label_names), "id2label": data.id2label, "token": job["token"]},
        **reference,
    )
    trainer = SmileTrainer(
        model=job["checkpoint"],
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        compute_metrics=ClassificationMetrics(top_k=(1, 5)),
        processing_class=processor,
    )
    from smile_hf.checkpoints import get_last_checkpoint

    resume = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start
    trainer.args.dataloader_drop_last = False  # evaluate every test image
    metrics = trainer.evaluate()
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "target": job["dataset"],
        "shots": SHOTS,
        "seed": seed,
        "method": method,
        "accuracy": float(metrics["eval_accuracy"]),
        "top5_accuracy": float(metrics.get("eval_top5_accuracy", float("nan"))),
        "ece": float(metrics["eval_ece"]),
        "eval_images": int(metrics["eval_num_samples"]),
        "train_images": len(data.train),
        "train_seconds": round(train_seconds, 1),
        "steps": job["max_steps"],
    }


def reference_table(summary: dict, datasets: list[str]) -> str:
    """Ours next to the reference README's numbers, for fine-tuning and SMILE (top-1 %)."""
    rows = []
    for method, name in (("finetune", "L2 fine-tuning"), ("smile", "SMILE")):
        row = [name]
        for d in datasets:
            cell = summary[d][SHOTS].get(method)
            ours = f"{100 * mean_std(cell['accuracy'])[0]:.2f}" if cell and cell["accuracy"] else "n/a"
            row += [f"{REFERENCE[d][method]:.2f}", ours]
        rows.append(row)
    gain = ["SMILE − fine-tuning"]
    for d in datasets:
        ref_gain = REFERENCE[d]["smile"] - REFERENCE[d]["finetune"]
        cells = [summary[d][SHOTS].get(m) for m in ("finetune", "smile")]
        ours = (
            f"{100 * (mean_std(cells[1]['accuracy'])[0] - mean_std(cells[0]['accuracy'])[0]):+.2f}"
            if all(c and c["accuracy"] for c in cells)
            else "n/a"
        )
        gain += [f"{ref_gain:+.2f}", ours]
    rows.append(gain)
    header = ["top-1 (%)"] + [f"{DATASET_NAMES[d]} {who}" for d in datasets for who in ("reference", "ours")]
    return markdown_table(header, rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (student and teacher)")
    parser.add_argument("--num_workers", type=int, default=8, help="dataloader workers")
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--token", default=None)
    parser.add_argument("--allow_cpu", action="store_true", help="run without a GPU (days per run; for smoke tests)")
    parser.add_argument("--runs_dir", default="runs/paper_table", help="checkpoints of the runs (resumed if there)")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "paper_table.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS_DIR, "paper_table.md"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    opts = parse_args(argv)
    datasets = [d.strip() for d in opts.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise SystemExit(f"Unknown dataset(s) {unknown}; the paper's are {', '.join(DATASETS)}.")
    seeds = [int(s) for s in opts.seeds.split(",")]
    methods, missing = available_methods([m.strip() for m in opts.methods.split(",") if m.strip()])
    if missing:
        log(f"not in this install of smile_hf, skipped: {', '.join(missing)}")
    check_hub(opts.checkpoint, datasets, opts.token)
    import torch

    if not torch.cuda.is_available() and not opts.allow_cpu:
        raise SystemExit(
            "benchmarks/paper_table.py trains ResNet-50 at 224 x 224 for 9000 steps per run: it needs a GPU "
            "(pass --allow_cpu to run anyway, e.g. with --max_steps 10 as a smoke test)."
        )
    runs = []
    if os.path.isfile(opts.output):  # resume: keep finished runs of the same setting
        with open(opts.output, encoding="utf-8") as f:
            runs = [r for r in json.load(f).get("runs", []) if r["steps"] == opts.max_steps]
    done = {(r["target"], r["seed"], r["method"]) for r in runs}
    started = time.time()
    for seed in seeds:
        for dataset in datasets:
            for method in methods:
                if (dataset, seed, method) in done:
                    continue
                log(f"{dataset} seed {seed} {method}: {opts.max_steps} steps")
                run = run_one({
                    "dataset": dataset, "seed": seed, "method": method, "max_steps": opts.max_steps,
                    "checkpoint": opts.checkpoint, "bf16": opts.bf16, "num_workers": opts.num_workers,
                    "cache_dir": opts.cache_dir, "token": opts.token, "output_dir": opts.runs_dir,
                })  # fmt: skip
                runs.append(run)
                log(f"{dataset} seed {seed} {method}: top-1 {100 * run['accuracy']:.2f}%, ECE {100 * run['ece']:.2f}%")
                write_json(opts.output, {"runs": runs})  # after every run, so that a stop loses at most one
    from accuracy import summarise

    summary = summarise(runs, datasets, [SHOTS], methods)
    payload = {
        "environment": environment(),
        "settings": {
            "command": " ".join(
                ["python", "-m", "benchmarks.paper_table", *(argv if argv is not None else sys.argv[1:])]
            ),
            "checkpoint": opts.checkpoint,
            "datasets": datasets,
            "methods": methods,
            "missing_methods": missing,
            "seeds": seeds,
            "max_steps": opts.max_steps,
            "bf16": opts.bf16,
            "recipe": "SmileTrainingArguments(reference_recipe=True, max_steps=9000)",
            "wall_seconds": round(time.time() - started, 1),
        },
        "reference": REFERENCE,
        "summary": summary,
        "runs": runs,
    }
    text = "\n".join([
        "## The paper's setting (ResNet-50 ImageNet -> CUB-200-2011 / Stanford Cars / FGVC-Aircraft)",
        "",
        f"`{opts.checkpoint}`, full training sets, {opts.max_steps} steps of the reference recipe, seeds "
        f"{', '.join(map(str, seeds))}. Cells: top-1 mean ± std over seeds / mean ECE, in %.",
        "",
        accuracy_table(summary, datasets, [SHOTS], methods),
        "",
        "Against the SMILE reference README (ResNet-50, top-1 %):",
        "",
        reference_table(summary, datasets),
        "",
    ])  # fmt: skip
    print(text)
    write_json(opts.output, payload)
    write_text(opts.markdown, text)
    return payload


if __name__ == "__main__":
    main()
