"""The shots-curve benchmark: its paired differences and t-intervals against a hand computation, and one tiny run of
the whole grid (one seed, two shot levels, two steps) through `python -m benchmarks.shots_curve`."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.shots_curve import paired_differences, parse_args, plan, plot, summarise, t_interval
from benchmarks.text import X_LABEL

from .test_benchmarks import CHECKPOINT, run


def runs_of(method: str, accuracies, shots=5, source="src") -> list[dict]:
    return [{"source": source, "target": "digits", "shots": shots, "seed": seed, "method": method, "accuracy": a}
            for seed, a in enumerate(accuracies)]  # fmt: skip


def test_paired_difference_and_interval_by_hand():
    # SMILE 90 / 80 / 85 %, fine-tuning 89 / 77 / 86 %: per-seed differences +1, +3, -1 points, mean +1, sample sd
    # sqrt((0 + 4 + 4) / 2) = 2 points; t(0.975, 2 dof) = 4.302653 (printed t table), half-width 4.302653 * 2 / sqrt(3)
    # = 4.968276 points. Tolerance 1e-8: the table's 6 decimals times sd / sqrt(n) = 0.0115 stay below it.
    runs = runs_of("smile", [0.90, 0.80, 0.85]) + runs_of("finetune", [0.89, 0.77, 0.86])
    result = paired_differences(runs, "smile", "finetune")
    assert result["seeds"] == [0, 1, 2]
    assert result["differences"] == pytest.approx([0.01, 0.03, -0.01], abs=1e-12)
    assert result["mean"] == pytest.approx(0.01, abs=1e-12)
    assert result["sd"] == pytest.approx(0.02, abs=1e-12)
    assert result["half_width"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), abs=1e-8)
    assert (result["low"], result["high"]) == pytest.approx((0.01 - 0.04968276, 0.01 + 0.04968276), abs=1e-8)
    assert result["seeds_better"] == 2 and result["n"] == 3


def test_pairing_uses_common_seeds_only():
    # mixup has no seed 2: the difference is over seeds 0 and 1 (+0.1, +0.3 -> mean 0.2, sd sqrt(0.02), t(1) = 12.706205)
    runs = runs_of("smile", [0.5, 0.6, 0.7]) + runs_of("mixup", [0.4, 0.3])
    result = paired_differences(runs, "smile", "mixup")
    assert result["seeds"] == [0, 1] and result["mean"] == pytest.approx(0.2)
    assert result["half_width"] == pytest.approx(12.706205 * math.sqrt(0.02) / math.sqrt(2), abs=1e-6)


def test_single_value_has_no_interval():
    assert t_interval([0.7]) == {"mean": 0.7, "low": None, "high": None, "half_width": None, "sd": None, "n": 1}


def test_summary_keeps_sources_and_full_set_apart():
    runs = (runs_of("smile", [0.9, 0.8], shots=None) + runs_of("finetune", [0.7, 0.8], shots=None)
            + runs_of("smile", [0.1, 0.1], shots=None, source="other") + runs_of("finetune", [0.2, 0.2], shots=None, source="other"))  # fmt: skip
    summary = summarise(runs, ["src", "other"], "digits", [None], ["finetune", "smile"])
    assert summary["src"]["full"]["smile - finetune"]["differences"] == pytest.approx([0.2, 0.0])
    assert summary["other"]["full"]["smile - finetune"]["mean"] == pytest.approx(-0.1)
    assert summary["src"]["full"]["finetune"]["accuracy"] == [0.7, 0.8]
    assert "smile - mixup" not in summary["src"]["full"]  # mixup was not run


def test_the_plot_names_its_shots(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    runs = runs_of("smile", [0.5, 0.6]) + runs_of("mixup", [0.4, 0.5]) + runs_of("finetune", [0.4, 0.4])
    settings = {"sources": {"src": {"parameters": 1000, "seeds": [0, 1]}}, "target": "digits", "shots": [5],
                "methods": ["finetune", "mixup", "smile"]}  # fmt: skip
    payload = {"settings": settings, "summary": summarise(runs, ["src"], "digits", [5], settings["methods"])}
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep each figure to read its axes
    plot(payload, str(tmp_path / "images.png"))
    plot(payload, str(tmp_path / "text.png"), x_label=X_LABEL)
    assert [fig.axes[1].get_xlabel() for fig in figures] == ["training images per class", X_LABEL]
    assert "descriptions" in X_LABEL  # the text benchmark's shots are package descriptions, not images


@pytest.mark.cpu_only("the shots curve reuses the accuracy benchmark's runs, which train on the CPU")
def test_tiny_grid_end_to_end(tmp_path):
    out = tmp_path / "curve"
    result = run("shots_curve", "--seeds", "0", "--shots", "1,full", "--max_steps", "2", "--workers", "1",
                 "--sources", f"tiny={CHECKPOINT}", "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "curve.json").read_text())
    runs = payload["runs"]
    assert len(runs) == 6 and all(r["steps"] == 2 and r["source"] == "tiny" for r in runs)
    assert {r["train_images"] for r in runs if r["shots"] == 1} == {10}
    assert {r["train_images"] for r in runs if r["shots"] is None} == {898}  # the whole digits training half
    acc = {(r["shots"], r["method"]): r["accuracy"] for r in runs}
    for shots, label in ((1, "1"), (None, "full")):
        cell = payload["summary"]["tiny"][label]
        assert cell["smile - mixup"]["differences"] == [acc[(shots, "smile")] - acc[(shots, "mixup")]]
        assert cell["smile - finetune"]["low"] is None  # one seed: no interval
    assert "| full |" in (tmp_path / "curve.md").read_text()
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_fewer_seeds_and_shots_for_one_source():
    opts = parse_args(["--sources", f"a={CHECKPOINT},b={CHECKPOINT}", "--seeds", "0,1,2", "--shots", "1,2,full",
                       "--source_seeds", "b=0,1", "--source_shots", "b=1,full"])  # fmt: skip
    settings, jobs = plan(opts)
    assert settings["sources"]["b"]["shots"] == [1, None] and settings["sources"]["a"]["shots"] == [1, 2, None]
    count = {name: sum(j["source"] == name for j in jobs) for name in ("a", "b")}
    assert count == {"a": 3 * 3 * 3, "b": 2 * 2 * 3}  # seeds x shot levels x (finetune, mixup, smile)
