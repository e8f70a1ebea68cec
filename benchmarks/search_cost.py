# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What a hyperparameter search costs: `--hp_search_trials 4` against 4 plain runs with the same arguments and the
same trial length (`--max_steps`), on the offline `digits` preset with the bundled checkpoint, through the run driver
in this process.

A search prepares the data once, runs its trials (each trains `--max_steps` steps on the training data less the
validation split and evaluates on the validation split), writes `hp_search.json` and its plot, then trains once more
with the best values. A plain run prepares the data, trains `--max_steps` steps and evaluates (`--max_eval_samples`
is set to about the validation split's size, so that both evaluate about as many images). Reported:

- the search phase (from the start of the search to its best values, outputs written) / 4 plain runs (the target:
  at most 1.10);
- the whole search command / 5 plain runs (its 4 trials and the final training);
- the search's fixed costs: opening the study (importing optuna, creating the SQLite study) and writing its outputs
  (the JSON and the matplotlib plot), and the mean trial against the mean plain run;
- with `--per_trial_loading` (on by default), the same search with the checkpoint read from disk for each trial (how
  trials loaded their models before they trained copies of models loaded once per search).

The variants alternate, their order reversed every repeat; the ratios are taken within a repeat, and the median over
repeats is reported. Everything runs in one process after a warm-up run, with optuna and matplotlib imported first:
no variant pays the interpreter's start or the imports (4 plain runs as 4 commands would pay them 4 times).

    python -m benchmarks.search_cost                   # -> results/search_cost.{json,md}, ~10 minutes on 2 CPU cores
    python -m benchmarks.search_cost --max_steps 4 --repeats 1 --output /tmp/s.json --markdown /tmp/s.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time

import torch

from .common import RESULTS_DIR, environment, log, markdown_table, publish
from .run_timing import device_and_load, load_average, run_driver

TRIALS = 4
TARGET = 1.10


def base_argv(args: argparse.Namespace, output_dir: str) -> list[str]:
    return [
        "--dataset", "digits", "--method", args.method, "--max_steps", str(args.max_steps),
        "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "64",
        "--max_eval_samples", str(args.max_eval_samples), "--save_strategy", "no", "--eval_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "True", "--log_level", "warning", "--seed", "0",
        "--overwrite_output_dir", "True", "--output_dir", output_dir,
    ]  # fmt: skip


@contextlib.contextmanager
def timed(module, name: str, times: dict, key: str):
    """While open, `module.name` adds its wall time to `times[key]`."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            times[key] = times.get(key, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, real)


def run_search(args: argparse.Namespace, output_dir: str, per_trial_loading: bool) -> dict:
    """One `--hp_search_trials 4` command: its wall time, its phases and its trials' durations."""
    from smile_hf.run import driver, hp_search

    times = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(timed(driver, "search", times, "search_s"))
        stack.enter_context(timed(hp_search, "open_study", times, "open_study_s"))
        stack.enter_context(timed(hp_search, "write_search_outputs", times, "outputs_s"))
        stack.enter_context(timed(hp_search, "load_trial_models", times, "load_models_s"))
        if per_trial_loading:  # no models loaded once: every trial reads the checkpoint itself
            real = hp_search.load_trial_models
            hp_search.load_trial_models = lambda *a, **k: None
            stack.callback(setattr, hp_search, "load_trial_models", real)
        argv = base_argv(args, output_dir) + ["--hp_search_trials", str(TRIALS), "--hp_search_rerun", "True"]
        _, times["command_s"] = run_driver(argv)
    with open(os.path.join(output_dir, "hp_search.json"), encoding="utf-8") as f:
        trials = json.load(f)["trials"]
    times["trials_s"] = [t["duration_s"] for t in trials]
    return times


def run_plain(args: argparse.Namespace, output_dir: str) -> float:
    return run_driver(base_argv(args, output_dir))[1]


def one_repeat(args: argparse.Namespace, root: str, repeat: int) -> dict:
    variants = ["search", "plain"] + (["search, checkpoint per trial"] if args.per_trial_loading else [])
    if repeat % 2:
        variants.reverse()
    result = {}
    for variant in variants:
        output_dir = os.path.join(root, f"{variant.split(',')[0]}-{repeat}")
        if variant == "plain":
            result["plain_s"] = [run_plain(args, output_dir) for _ in range(TRIALS)]
            log(f"repeat {repeat}: 4 plain runs {sum(result['plain_s']):.1f} s")
        else:
            key = "search" if variant == "search" else "search_per_trial_loading"
            result[key] = run_search(args, output_dir, per_trial_loading=variant != "search")
            log(f"repeat {repeat}: {variant}: phase {result[key]['search_s']:.1f} s, command {result[key]['command_s']:.1f} s")
    plain = sum(result["plain_s"])
    for key in ("search", "search_per_trial_loading"):
        if key in result:
            result[key]["phase_over_4_plain"] = result[key]["search_s"] / plain
            result[key]["command_over_5_plain"] = result[key]["command_s"] / (plain * 5 / TRIALS)
    return result


def median(repeats: list[dict], *keys) -> float:
    values = []
    for r in repeats:
        for key in keys[:-1]:
            r = r[key]
        values.append(r[keys[-1]])
    return statistics.median(values)


def report(payload: dict) -> str:
    settings, repeats = payload["settings"], payload["repeats"]
    plain = statistics.median(statistics.fmean(r["plain_s"]) for r in repeats)
    rows = [["4 plain runs", f"{4 * plain:.1f}", "1.00", "", "", "", f"{plain:.2f}"]]
    for key, name in (("search", "search (models loaded once)"), ("search_per_trial_loading", "search, checkpoint read per trial")):
        if key not in repeats[0]:
            continue
        rows.append([
            name, f"{median(repeats, key, 'search_s'):.1f}", f"{median(repeats, key, 'phase_over_4_plain'):.2f}",
            f"{median(repeats, key, 'command_over_5_plain'):.2f}", f"{median(repeats, key, 'open_study_s'):.2f}",
            f"{median(repeats, key, 'outputs_s'):.2f}",
            f"{statistics.median(statistics.fmean(r[key]['trials_s']) for r in repeats):.2f}",
        ])  # fmt: skip
    ratio = median(repeats, "search", "phase_over_4_plain")
    verdict = "met" if ratio <= TARGET else f"missed by {ratio - TARGET:.2f}"
    device, load = device_and_load(payload)
    return "\n".join([
        "# What a search costs: `--hp_search_trials 4` against 4 plain runs", "",
        f"{device}. `--dataset digits`, the bundled checkpoint, `--method {settings['method']}`, `--max_steps "
        f"{settings['max_steps']}` (a trial and a plain run train as many steps), batch {settings['batch_size']}, "
        f"`--max_eval_samples {settings['max_eval_samples']}`. {len(repeats)} repeat(s), the variants alternating. "
        f"{load}", "",
        markdown_table(["variant", "search phase s", "/ 4 plain runs", "command / 5 plain runs", "opening the study s",
                        "writing hp_search.json + plot s", "mean trial (plain run) s"], rows), "",
        f"Target: the search phase <= {TARGET} x 4 plain runs: {verdict} ({ratio:.2f}). The search phase holds the "
        "trials, opening the study and writing its outputs; the command adds preparing the data once and the final "
        "training with the best values (hence its comparison with 5 plain runs). A plain run's time is its whole "
        "command in this process (preparing the data, loading the checkpoint, training, evaluating, writing its "
        "results); imports and the interpreter's start are paid by no variant (done before timing).",
        *(line for note in payload.get("notes", []) for line in ("", note)),
    ])  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="smile")
    parser.add_argument("--max_steps", type=int, default=20, help="steps of a trial and of a plain run")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_eval_samples", type=int, default=180, help="about the validation split's 179 images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per_trial_loading", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the search with the checkpoint read per trial")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine may be shared)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "smile_hf_search_cost"))
    parser.add_argument("--note", action="append", default=[], help="a line added to the report")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "search_cost.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS_DIR, "search_cost.md"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    start_load = load_average()
    run_plain(args, os.path.join(args.workdir, "warm-up"))  # imports and first-call costs, not counted
    import matplotlib.pyplot  # noqa: F401 - the search's imports, done once here for both search variants
    import optuna  # noqa: F401
    repeats = [one_repeat(args, args.workdir, r) for r in range(args.repeats)]
    payload = {
        "environment": environment(), "load": {"start": start_load, "end": load_average()},
        "settings": {k: getattr(args, k) for k in ("method", "max_steps", "batch_size", "max_eval_samples")},
        "repeats": repeats, "notes": args.note,
    }  # fmt: skip
    publish(report(payload), payload, args.output, args.markdown)
    return payload


if __name__ == "__main__":
    main()
