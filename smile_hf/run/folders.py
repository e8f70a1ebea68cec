# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The output folder of a comparison: never silently another comparison's. Each run's folder gets the protection of
one run ([`smile_hf.checkpoints.resume_point`]); the comparison's folder is refused while it holds runs that are not
part of this comparison, and `--overwrite_output_dir` deletes them with the previous table and curves, so that
`results.json`, the curves and the run folders always describe the same runs."""

from __future__ import annotations

import json
import logging
import os
import shutil

from ..checkpoints import FINISHED_RUN_FILE, RUN_CONFIG_NAME, OutputDirError, list_checkpoints

logger = logging.getLogger(__name__)

RUN_MARKERS = (RUN_CONFIG_NAME, FINISHED_RUN_FILE, "model.safetensors", "trainer_state.json")
"""Files that make a folder a run's: what a run writes (its arguments, results, model, state)."""
CURVES_KEY = "curves"
"""Key of the combined results file that names the curves drawn from its runs (PNG and JSON)."""


def is_run_folder(path: str) -> bool:
    """Whether `path` holds (part of) a run: one of [`RUN_MARKERS`] or a `checkpoint-<step>` folder."""
    if not os.path.isdir(path):
        return False
    return any(os.path.exists(os.path.join(path, name)) for name in RUN_MARKERS) or bool(list_checkpoints(path))


def holds_run_files(path: str) -> bool:
    """Whether `path` itself holds a run's files (checkpoints, arguments, model, state; not only a results table)."""
    names = [name for name in RUN_MARKERS if name != FINISHED_RUN_FILE]
    return any(os.path.exists(os.path.join(path, name)) for name in names) or bool(list_checkpoints(path))


def other_runs(output_dir: str, run_dirs: list[str]) -> list[str]:
    """The runs in `output_dir` that are not among `run_dirs` (this comparison's run folders): its sub-folders that
    are run folders, and `output_dir` itself when it holds a run but is not one of `run_dirs`."""
    if not os.path.isdir(output_dir):
        return []
    planned = {os.path.normpath(path) for path in run_dirs}
    found = [
        path for name in sorted(os.listdir(output_dir))
        if os.path.normpath(path := os.path.join(output_dir, name)) not in planned and is_run_folder(path)
    ]  # fmt: skip
    if os.path.normpath(output_dir) not in planned and holds_run_files(output_dir):
        found.insert(0, output_dir)  # a single run's files at the top (a results.json alone is the table's)
    return found


def recorded_curves(results_path: str) -> list[str]:
    """The curve files (PNG, JSON) that the combined results file `results_path` says were drawn from its runs."""
    try:
        with open(results_path, encoding="utf-8") as f:
            png = json.load(f).get(CURVES_KEY)
    except (OSError, ValueError, AttributeError):
        return []
    return [png, os.path.splitext(png)[0] + ".json"] if isinstance(png, str) else []


def check_comparison_dir(output_dir: str, run_dirs: list[str], results_file: str, overwrite: bool) -> None:
    """Before any training: raise an [`OutputDirError`] naming them if `output_dir` holds runs other than
    `run_dirs`; with `overwrite`, delete them, the combined `results_file` and the curves it names instead."""
    others = other_runs(output_dir, run_dirs)
    if others and not overwrite:
        shown = ", ".join(os.path.relpath(path, output_dir) for path in others[:5]) + (" ..." if len(others) > 5 else "")
        raise OutputDirError(
            f"{output_dir} holds {len(others)} other run(s) than this comparison's ({shown}): start fresh with "
            "--overwrite_output_dir True (deletes them, with the previous table and curves) or another --output_dir."
        )
    if not overwrite:
        return
    results_path = os.path.join(output_dir, results_file)
    top = os.path.normpath(output_dir)
    top_files = [os.path.join(output_dir, name) for name in RUN_MARKERS] + [p for _, p in list_checkpoints(output_dir)]
    stale = [p for p in others if os.path.normpath(p) != top] + (top_files if output_dir in others else [])
    for path in [*stale, *recorded_curves(results_path)]:
        if os.path.isdir(path):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            shutil.rmtree(path)
        elif os.path.exists(path):
            logger.warning(f"--overwrite_output_dir: deleting {path}")
            os.remove(path)
    if len(run_dirs) > 1 and os.path.isfile(results_path):
        os.remove(results_path)
