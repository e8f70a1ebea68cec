# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The grid driver of the few-shot benchmarks (`shots_curve.py`, `text.py`, `unlabeled.py`): every (source, shots,
seed, method) job run in a spawned process pool, the result file rewritten after each run (`--resume` reuses the runs
already in it), then the runs summarised into `OUTPUT.json`, `OUTPUT.md` and, where the benchmark draws one,
`OUTPUT.png`. `--report_only` summarises the runs of an existing `OUTPUT.json` (those of a cut run too) again.

A benchmark gives its own `plan`, `run_job`, `key`, `summarise`, `report` and `plot` as a [`Grid`].
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .common import environment, log, write_json, write_text


@dataclass(frozen=True)
class Grid:
    """What a grid benchmark says for itself.

    Args:
        module: the name after `python -m benchmarks.` (the command line recorded in the settings).
        plan: `opts -> (settings, jobs)`; the settings hold `sources`, `shots` and `methods`, every job `source`,
            `shots`, `seed`, `method`.
        run_job: one job -> its run (a dict with `source`, `shots`, `seed`, `method`, `accuracy`, `steps`,
            `train_seconds`); a picklable top-level function (the pool spawns).
        key: a job or a run -> what identifies it (the runs `--resume` reuses).
        summarise: `(runs, settings) -> summary`.
        report: the payload -> the markdown report.
        plot: `(payload, path)` draws the PNG; `None` for none.
        setup: called once in the main process before the pool starts.
    """

    module: str
    plan: Callable[[argparse.Namespace], tuple[dict, list[dict]]]
    run_job: Callable[[dict], dict]
    key: Callable[[dict], tuple]
    summarise: Callable[[list[dict], dict], dict]
    report: Callable[[dict], str]
    plot: Callable[[dict, str], None] | None = None
    setup: Callable[[], None] | None = None


def add_output_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    """`--workers`, `--output` (default `output`), `--resume` and `--report_only`."""
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=output, help="path without extension")
    parser.add_argument("--resume", action="store_true", help="reuse the runs already in OUTPUT.json")
    parser.add_argument("--report_only", action="store_true",
                        help="summarise OUTPUT.json's runs (those of a cut run too) into the report")  # fmt: skip


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces the results (without `--resume`: the same results either way)."""
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
    return " ".join([f"python -m benchmarks.{module}", *given])


def finish(grid: Grid, payload: dict, output: str) -> str:
    """Write `output`.json, .md (and .png); return the report."""
    text = grid.report(payload)
    write_json(output + ".json", payload)
    write_text(output + ".md", text)
    if grid.plot is not None:
        grid.plot(payload, output + ".png")
    return text


def reusable_runs(grid: Grid, output: str, jobs: list[dict], max_steps: int) -> list[dict]:
    """The runs of `output`.json that are jobs of this grid, trained for the same number of steps."""
    if not os.path.isfile(output + ".json"):
        return []
    with open(output + ".json", encoding="utf-8") as f:
        wanted = {grid.key(j) for j in jobs}
        return [r for r in json.load(f)["runs"] if grid.key(r) in wanted and r["steps"] == max_steps]


def run_grid(grid: Grid, opts: argparse.Namespace, argv: list[str] | None) -> dict:
    """Plan the grid, run the jobs not reused, and return the payload (environment, settings, summary, runs)."""
    settings, jobs = grid.plan(opts)
    settings["command"] = command_line(grid.module, argv)
    runs = reusable_runs(grid, opts.output, jobs, opts.max_steps) if opts.resume else []
    done = {grid.key(r) for r in runs}
    jobs = [j for j in jobs if grid.key(j) not in done]
    if grid.setup is not None:
        grid.setup()
    log(f"{len(jobs)} runs ({len(runs)} reused), {opts.max_steps} steps each, {opts.workers} worker(s)")
    started = time.time()
    payload = {"environment": environment(), "settings": settings}
    with mp.get_context("spawn").Pool(opts.workers) as pool:
        for i, run in enumerate(pool.imap_unordered(grid.run_job, jobs), 1):
            runs.append(run)
            shots = "full" if run["shots"] is None else run["shots"]
            log(f"[{i}/{len(jobs)}] {run['source']} {shots}-shot seed {run['seed']} {run['method']}: "
                f"{100 * run['accuracy']:.1f}% ({run['train_seconds']:.0f} s)")  # fmt: skip
            write_json(opts.output + ".json", {**payload, "summary": {}, "runs": runs})  # to resume from
    settings["wall_seconds"] = round(time.time() - started, 1)
    runs.sort(key=lambda r: (list(settings["sources"]).index(r["source"]), settings["shots"].index(r["shots"]),
                             r["seed"], settings["methods"].index(r["method"])))  # fmt: skip
    payload.update(summary=grid.summarise(runs, settings), runs=runs)
    return payload


def main(grid: Grid, opts: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Run the grid (or, with `--report_only`, summarise `OUTPUT.json` again), write and print the report."""
    if opts.report_only:
        with open(opts.output + ".json", encoding="utf-8") as f:
            payload = json.load(f)
        payload["summary"] = grid.summarise(payload["runs"], payload["settings"])
    else:
        payload = run_grid(grid, opts, argv)
    print(finish(grid, payload, opts.output))
    return payload
