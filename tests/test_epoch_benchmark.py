"""The epoch benchmark: its data-wait accounting on a scripted clock, and one tiny run end to end through the run
driver (no timing assertions; marked slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import run_timing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_timer_counts_the_gaps_before_each_step_as_data_wait(monkeypatch):
    # epoch begins at 1; step 1 runs 3 -> 7 (waited 2), step 2 runs 8 -> 12 (waited 1); the run ends at 13
    clock = iter([0.0, 1.0, 3.0, 7.0, 8.0, 12.0, 13.0])
    monkeypatch.setattr(run_timing.time, "perf_counter", lambda: next(clock))
    timer = run_timing.StepTimer()
    timer.on_train_begin(None, None, None)
    timer.on_epoch_begin(None, None, None)
    for _ in range(2):
        timer.on_step_begin(None, None, None)
        timer.on_step_end(None, None, None)
    timer.on_train_end(None, None, None)
    assert timer.summary() == {"train_s": 13.0, "data_wait_s": 3.0, "data_wait_fraction": 3.0 / 13.0, "steps": 2}


@pytest.mark.slow  # three runs of the driver: about 30 s on 2 idle cores
def test_epoch_benchmark_runs_one_epoch_of_each_method_through_the_run_driver(tmp_path):
    out, md = tmp_path / "epoch.json", tmp_path / "epoch.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.epoch", "--device", "cpu", "--sizes", "64x48:12", "--classes", "2",
         "--batch_size", "4", "--repeats", "1", "--workdir", str(tmp_path / "work"), "--output", str(out),
         "--markdown", str(md)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    cell = json.loads(out.read_text())["results"]["64x48"]["fmnist-resnet-tiny"]
    for method in ("finetune", "smile"):
        (run,) = cell["runs"][method]
        # 12 images, 2 classes, 15 % held out (1 per class): 10 trained on, 3 steps of at most 4
        assert run["num_train"] == 10 and run["steps"] == math.ceil(10 / 4)
        assert 0 < run["data_wait_s"] < run["train_s"] and run["data_wait_fraction"] == pytest.approx(
            run["data_wait_s"] / run["train_s"]
        )
    assert cell["summary"]["ratio"]["values"] == [cell["runs"]["smile"][0]["train_s"] / cell["runs"]["finetune"][0]["train_s"]]
    assert len(os.listdir(tmp_path / "work" / "64x48-12" / "class_0")) == 6
    assert "SMILE / stock epoch" in md.read_text()
