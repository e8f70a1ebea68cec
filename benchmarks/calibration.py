# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""How well temperature scaling calibrates saved few-shot runs: for each run, fit T on the images of its training pool
that the few-shot subset left out (a validation split neither trained nor evaluated on), fold T into the model's head
(`smile_hf.calibration.fold_temperature`, as the export does) and measure NLL, ECE and top-1 on the evaluation split
before and after.

    python -m benchmarks.calibration outputs/linearity_demo/*-seed*   # -> results/calibration.{json,md,png}

A run is a saved output folder of `examples/run_smile.py` / `compare_methods.py` trained with
`--train_samples_per_class` (its `run_config.json` rebuilds the data).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import numpy as np
import torch
from transformers import AutoModelForImageClassification

from smile_hf.analysis import exported_images, run_data
from smile_hf.calibration import fold_temperature, negative_log_likelihood, plot_reliability, temperature_scaling
from smile_hf.data.transforms import INDEX_COLUMN
from smile_hf.metrics import expected_calibration_error, softmax, top_k_accuracy

from .common import RESULTS_DIR, environment, markdown_table, mean_std, write_json, write_text


@torch.no_grad()
def logits_of(model, pixel_values: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return torch.cat([model(pixel_values=batch).logits for batch in pixel_values.split(batch_size)]).double().numpy()


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"nll": negative_log_likelihood(logits, labels), "ece": expected_calibration_error(softmax(logits), labels),
            "accuracy": top_k_accuracy(logits, labels)}  # fmt: skip


def calibrate_run(run_dir: str) -> tuple[dict, dict]:
    """One run: T fitted on the left-out training images, the evaluation split's scores before and after folding it
    into the model. Returns the record and the evaluation predictions (probabilities before / after, labels)."""
    used = set(run_data(run_dir).train[INDEX_COLUMN])
    full = run_data(run_dir, train_samples_per_class=None)
    held_out = [i for i, index in enumerate(full.train[INDEX_COLUMN]) if index not in used]
    if not held_out:
        raise ValueError(f"{run_dir} trained on its whole training split: no image is left to fit T on.")
    model = AutoModelForImageClassification.from_pretrained(run_dir).eval()
    val_x, val_y = exported_images(run_dir, full, full.train, held_out)
    eval_x, eval_y = exported_images(run_dir, full, full.eval, range(len(full.eval)))
    fit = temperature_scaling(logits_of(model, val_x), val_y.numpy())
    before = logits_of(model, eval_x)
    fold_temperature(model, fit.temperature, check_input=eval_x[:8])
    after = logits_of(model, eval_x)  # the folded model, as exported
    labels = eval_y.numpy()
    with open(os.path.join(run_dir, "run_config.json"), encoding="utf-8") as f:
        method = json.load(f)["training"]["method"]
    record = {"run": os.path.normpath(run_dir), "method": method,
              "num_validation": len(held_out), "num_eval": len(labels), "fit": fit.to_dict(),
              "eval_before": scores(before, labels), "eval_after": scores(after, labels)}  # fmt: skip
    return record, {"before": softmax(before), "after": softmax(after), "labels": labels}


def summary_rows(records: list[dict]) -> list[list[str]]:
    by_method = defaultdict(list)
    for record in records:
        by_method[record["method"]].append(record)

    def cell(values, scale=1.0, digits=2):
        mean, std = mean_std([scale * v for v in values])
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    rows = []
    for method, group in by_method.items():
        rows.append([
            method, str(len(group)), cell([r["fit"]["temperature"] for r in group]),
            cell([r["eval_before"]["accuracy"] for r in group], 100), cell([r["eval_after"]["accuracy"] for r in group], 100),
            cell([r["eval_before"]["nll"] for r in group], digits=3), cell([r["eval_after"]["nll"] for r in group], digits=3),
            cell([r["eval_before"]["ece"] for r in group], 100), cell([r["eval_after"]["ece"] for r in group], 100),
        ])  # fmt: skip
    return rows


HEADER = ["method", "runs", "T", "top-1 before (%)", "top-1 after (%)", "NLL before", "NLL after", "ECE before (%)",
          "ECE after (%)"]  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "calibration"), help="Path without extension.")
    args = parser.parse_args(argv)
    records, predictions = [], defaultdict(lambda: defaultdict(list))
    for run_dir in args.run_dirs:
        record, predicted = calibrate_run(run_dir)
        records.append(record)
        for key, value in predicted.items():
            predictions[record["method"]][key].append(value)
        print(f"{run_dir}: T = {record['fit']['temperature']:.3f}, eval ECE {100 * record['eval_before']['ece']:.2f}% -> "
              f"{100 * record['eval_after']['ece']:.2f}%", flush=True)  # fmt: skip
    table = markdown_table(HEADER, summary_rows(records))
    print(table)
    write_text(args.output + ".md", table)
    write_json(args.output + ".json", {"command": "python -m benchmarks.calibration " + " ".join(args.run_dirs),
                                       "environment": environment(), "runs": records})  # fmt: skip
    curves = {}
    for method, predicted in predictions.items():
        labels = np.concatenate(predicted["labels"])
        for when in ("before", "after"):
            curves[f"{method} {when}"] = (np.concatenate(predicted[when]), labels)
    plot_reliability(curves, args.output + ".png", title="evaluation split, all seeds, before / after temperature scaling")
    return records


if __name__ == "__main__":
    main()
