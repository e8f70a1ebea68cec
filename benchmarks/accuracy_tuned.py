# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The accuracy benchmark with tuned rows: fine-tuning and SMILE each searched with the same budget, then compared.

For each target, shot level and seed, every method of `--methods` runs twice:

- `method`: its library defaults under the reference recipe, exactly the row of `benchmarks.accuracy`;
- `method[tuned]`: a search of `--tune_trials` trials (Optuna, TPE seeded with the run's seed) over the method's
  default space (`smile_hf.tuning.default_search_space`: the regulariser's declared space, the mixing's alpha, the
  learning rate over [lr / 10, lr x 10] and the weight decay), each trial trained on the run's few-shot subset
  minus a validation split held out of it (`smile_hf.data.carve_validation`, stratified, seeded with the run's seed,
  `--validation_fraction` of each class, at least 1) and scored on that validation split (`--tune_objective`:
  top-1 accuracy, as `--hp_search_objective`'s default, or the loss); then one final training with the study's
  best values on the whole few-shot subset, evaluated on the test images. The test images are never seen by the
  search: only the final run receives them.

Why not call `smile_hf.run.hp_search.run_trial` or `smile_hf.run.hp_search.optuna_search`: they are bound to the
driver's `ModelArguments` / `DataTrainingArguments`, its model loading, its data transforms and a SQLite study in an
output folder. A trial here is the benchmark's own run (`benchmarks.accuracy.train_and_evaluate`: same recipe,
decode-once transforms, drop-last rule and evaluation as the default rows), so a tuned row differs from a default
row by the searched values only. The search code the package exposes is reused: the space
(`default_search_space`), the draw of a point (`suggest`), setting it on the arguments (`apply_values`), the
objective (`hp_search.objective_value`) and the validation split (`carve_validation`).

Outputs: the markdown report (stdout and `--markdown`) and the raw runs, trials and summary as JSON (`--output`).

    python -m benchmarks.accuracy_tuned --targets digits --shots 5 --seeds 0,1,2 --tune_trials 6
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import sys
import tempfile
import time

import torch

from .accuracy import MAX_STEPS, load_data, log, quiet, run_one, train_and_evaluate
from .accuracy_report import report, smile_vs_finetune, summarise
from .accuracy_targets import set_transforms_decoding_once
from .common import REPO_ROOT, RESULTS_DIR, SOURCE_CHECKPOINT, environment, publish

TUNED = "[tuned]"
METHODS = ("finetune", "smile")
TRIALS = 6
VALIDATION_FRACTION = 0.2


def search_space(job: dict) -> dict:
    """The default search space of `job["method"]` under the reference recipe (its learning rate centres the range)."""
    from smile_hf import SmileTrainingArguments
    from smile_hf.tuning import default_search_space

    with tempfile.TemporaryDirectory(prefix="smile-space-") as output_dir:
        args = SmileTrainingArguments(output_dir=output_dir, method=job["method"], reference_recipe=True,
                                      use_cpu=True, report_to="none")  # fmt: skip
    return default_search_space(args)


def validation_data(data, seed: int, fraction: float):
    """The search's data: `data.train` split into what the trials train on and the validation split they are scored
    on (as `eval`); `data.eval`, the test images, is not part of it."""
    from smile_hf.data import carve_validation

    train, validation, split = carve_validation(data.train, data.label_column, seed, fraction)
    return dataclasses.replace(data, train=train, eval=validation, validation=None, validation_split=split)


def run_study(job: dict, search_data, space: dict):
    """The Optuna study of `job["trials"]` trials: each one trains on `search_data.train` with a point of `space` and
    is scored on `search_data.eval` (the validation split)."""
    import optuna

    from smile_hf.run.hp_search import objective_value
    from smile_hf.tuning import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if job["objective"] == "accuracy" else "minimize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=job["seed"]))

    def objective(trial) -> float:
        result = train_and_evaluate(job, search_data, suggest(trial, space))
        trial.set_user_attr("validation", {k: result[k] for k in ("accuracy", "loss", "eval_images", "train_images")})
        return objective_value({"eval_accuracy": result["accuracy"], "eval_loss": result["loss"]}, job["objective"])

    study.optimize(objective, n_trials=job["trials"])
    return study


def final_run(job: dict, data, config, values: dict) -> dict:
    """The tuned row: train on the whole few-shot subset with `values`, evaluate on the test images."""
    set_transforms_decoding_once(data, config)
    return train_and_evaluate(job, data, values)


def tune_one(job: dict) -> dict:
    """Search `job["method"]` on a validation split of its few-shot subset, then train once with the best values and
    evaluate on the test images: the run of `method[tuned]`, with its search under `"search"`."""
    torch.set_num_threads(job["threads"])
    quiet()
    data, config = load_data(job)
    search_data = validation_data(data, job["seed"], job["validation_fraction"])
    set_transforms_decoding_once(search_data, config)
    space = search_space(job)
    started = time.perf_counter()
    study = run_study(job, search_data, space)
    search_seconds = time.perf_counter() - started
    best = study.best_trial
    run = final_run(job, data, config, dict(best.params))
    run["method"] = job["method"] + TUNED
    run["search"] = {
        "space": space,
        "objective": job["objective"],
        "validation_split": search_data.validation_split.to_dict(),
        "best_number": best.number,
        "best_values": dict(best.params),
        "best_value": float(best.value),
        "seconds": round(search_seconds, 1),
        "trials": [{"number": t.number, "values": t.params, "value": t.value, **t.user_attrs} for t in study.trials],
    }
    return run


def run_job(job: dict) -> dict:
    return tune_one(job) if job["tuned"] else run_one(job)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--targets", default="digits")
    parser.add_argument("--shots", default="5", help="training images per class")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    parser.add_argument("--tune_trials", type=int, default=TRIALS, help="search trials per method, target, shots, seed")
    parser.add_argument("--tune_objective", default="accuracy", choices=("accuracy", "loss"),
                        help="scored on the validation split")  # fmt: skip
    parser.add_argument("--validation_fraction", type=float, default=VALIDATION_FRACTION,
                        help="of each class of the few-shot subset, held out to score the trials (at least 1)")  # fmt: skip
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS, help="of every trial and run")
    parser.add_argument("--checkpoint", default=SOURCE_CHECKPOINT)
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (1: everything in this process)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "accuracy_tuned.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS_DIR, "accuracy_tuned.md"))
    opts = parser.parse_args(argv)
    if opts.tune_trials < 1:
        parser.error(f"--tune_trials must be >= 1, got {opts.tune_trials}.")
    return opts


def tuned_report(payload: dict) -> str:
    """The default report (table with the tuned rows), then the paired comparisons and each search's best values."""
    s = payload["settings"]
    lines = [
        report(payload),
        f"Rows `[tuned]`: the method's default space (learning rate and weight decay included) searched with "
        f"{s['tune_trials']} trials on a validation split of the few-shot subset, then trained once with the best "
        "values on the whole subset and evaluated on the test images; the other rows are the defaults above.",
        "",
        "Paired differences (mean top-1, points; per seed):",
        "",
    ]
    for r in payload["comparisons"]:
        diffs = ", ".join(f"{100 * d:+.1f}" for d in r["paired_differences"])
        lines.append(f"- {r['target']}, {r['shots']} shots, {r['method']} − {r['base']}: {100 * r['difference']:+.2f} "
                     f"(better on {r['seeds_better']}/{r['seeds']} seeds: {diffs})")  # fmt: skip
    lines += ["", f"Searches ({s['tune_trials']} trials each, validation {s['tune_objective']} on "
              f"{s['validation_fraction']:.0%} of each class of the few-shot subset, at least 1; best values):", ""]  # fmt: skip
    for run in payload["runs"]:
        if "search" in run:
            best = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in run["search"]["best_values"].items())  # fmt: skip
            value = run["search"]["best_value"]
            score = f"{100 * value:.0f}% top-1" if s["tune_objective"] == "accuracy" else f"loss {value:.3f}"
            lines.append(f"- {run['target']} {run['shots']}-shot seed {run['seed']} {run['method']}: {best} "
                         f"(validation {score}, trial {run['search']['best_number']})")  # fmt: skip
    return "\n".join(lines + [""])


def comparisons(summary: dict, targets, shots, methods) -> list[dict]:
    """SMILE against fine-tuning, both tuned, and each method tuned against its defaults (the report already holds
    SMILE against fine-tuning with the defaults)."""
    pairs = [("finetune" + TUNED, "smile" + TUNED)]
    pairs += [(m, m + TUNED) for m in methods]
    rows = []
    for base, method in pairs:
        if base.split("[")[0] in methods and method.split("[")[0] in methods:
            for row in smile_vs_finetune(summary, targets, shots, [method], base=base):
                rows.append({**row, "base": base})
    return rows


def main(argv=None) -> dict:
    opts = parse_args(argv)
    if not os.path.isfile(os.path.join(opts.checkpoint, "config.json")):
        raise SystemExit(f"No source checkpoint at {opts.checkpoint}: see benchmarks/accuracy.py.")
    targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    shots = [int(s) for s in opts.shots.split(",")]
    seeds = [int(s) for s in opts.seeds.split(",")]
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    base = {"max_steps": opts.max_steps, "checkpoint": opts.checkpoint, "threads": opts.threads,
            "trials": opts.tune_trials, "objective": opts.tune_objective,
            "validation_fraction": opts.validation_fraction}  # fmt: skip
    jobs = [{**base, "target": t, "shots": s, "seed": seed, "method": m, "tuned": tuned}
            for tuned in (True, False) for seed in seeds for t in targets for s in shots for m in methods]  # fmt: skip
    log(f"{len(jobs)} jobs: {len(methods)} methods x {len(targets)} targets x {len(shots)} shot levels x {len(seeds)} "
        f"seeds, default and tuned ({opts.tune_trials} trials + 1 final run), {opts.max_steps} steps each")  # fmt: skip
    started = time.time()
    runs = []
    if opts.workers <= 1:
        results = map(run_job, jobs)
    else:
        pool = mp.get_context("spawn").Pool(opts.workers)
        results = pool.imap_unordered(run_job, jobs)
    for i, run in enumerate(results, 1):
        runs.append(run)
        log(f"[{i}/{len(jobs)}] {run['target']} {run['shots']}-shot seed {run['seed']} {run['method']}: top-1 "
            f"{100 * run['accuracy']:.1f}%" + (f" (search {run['search']['seconds']:.0f} s)" if "search" in run else ""))  # fmt: skip
    if opts.workers > 1:
        pool.close()
    all_methods = methods + [m + TUNED for m in methods]
    summary = summarise(runs, targets, shots, all_methods)
    payload = {
        "environment": environment(),
        "settings": {
            "command": " ".join(
                ["python", "-m", "benchmarks.accuracy_tuned", *(argv if argv is not None else sys.argv[1:])]
            ),
            "checkpoint": os.path.relpath(opts.checkpoint, REPO_ROOT),
            "targets": targets,
            "shots": shots,
            "seeds": seeds,
            "methods": all_methods,
            "max_steps": opts.max_steps,
            "tune_trials": opts.tune_trials,
            "tune_objective": opts.tune_objective,
            "validation_fraction": opts.validation_fraction,
            "workers": opts.workers,
            "threads_per_worker": opts.threads,
            "wall_seconds": round(time.time() - started, 1),
        },  # fmt: skip
        "summary": summary,
        "smile_vs_finetune": smile_vs_finetune(summary, targets, shots, [m for m in methods if m == "smile"]),
        "comparisons": comparisons(summary, targets, shots, methods),
        "runs": sorted(runs, key=lambda r: (r["target"], r["shots"], r["seed"], all_methods.index(r["method"]))),
    }
    publish(tuned_report(payload), payload, opts.output, opts.markdown)
    return payload


if __name__ == "__main__":
    main()
