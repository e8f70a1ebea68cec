"""The figures `compare_methods.py` draws from all its runs: the reliability diagram of every method (from each run's
predictions on the evaluation split) and, with `--analyze`, the linearity analysis of every saved run.

Second code paths: the predictions behind the diagram against the metrics of the run's own final evaluation
(`trainer.evaluate()` through the shipped `evaluate` module: accuracy and ECE of the same model on the same images;
float64 softmax on both sides, so equal to 1e-9), and the combined linearity table against `analyze_run` called on
each run folder by hand (deterministic: same images, pairs and model; equal to 1e-9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smile_hf.analysis import analyze_run
from smile_hf.metrics import expected_calibration_error
from smile_hf.run import InputError
from smile_hf.run import compare as compare_methods

from .test_compare_reliability import compare_argv, trains  # noqa: F401 (fixtures)
from .test_run_reliability import resumes  # noqa: F401 (the fixture `trains` builds on)

pytest.importorskip("matplotlib", reason="the comparison figures need matplotlib")


def test_analyze_is_refused_without_saved_models(tmp_path, trains):  # noqa: F811
    with pytest.raises(InputError, match="--analyze measures the saved models: drop --save_strategy no"):
        compare_methods.main(compare_argv(tmp_path / "cmp", "--analyze", "True", "--save_strategy", "no"))
    assert trains == []  # refused before any training


def test_reliability_and_linearity_of_every_run(tmp_path, trains, monkeypatch):  # noqa: F811
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "linearity.md").write_text("an earlier comparison's table")  # deleted with --overwrite_output_dir
    drawn = {}
    write_reliability = compare_methods.write_reliability

    def spy(predictions, output_dir, title=""):
        drawn.update(predictions)
        return write_reliability(predictions, output_dir, title)

    monkeypatch.setattr(compare_methods, "write_reliability", spy)
    runs = compare_methods.main(compare_argv(out, "--save_strategy", "steps", "--save_steps", "2", "--analyze", "True",
                                             "--overwrite_output_dir", "True"))  # fmt: skip
    assert len(trains) == 2

    # one diagram, every method: the predictions are those of the run's final evaluation
    assert (out / "reliability.png").stat().st_size > 0
    assert list(drawn) == ["finetune", "smile"]
    for run in runs:
        [(probabilities, labels)] = drawn[run["label"]]
        assert probabilities.shape == (20, run["num_labels"]) and labels.shape == (20,)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
        metrics = run["metrics"]
        assert float(np.mean(probabilities.argmax(axis=1) == labels)) == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
        assert expected_calibration_error(probabilities, labels) == pytest.approx(metrics["eval_ece"], abs=1e-9)

    # the linearity analysis: each run in its folder, all of them in the comparison's
    combined = json.loads((out / "linearity.json").read_text())
    assert combined["command"].startswith("python examples/compare_methods.py --dataset digits")
    assert [r["method"] for r in combined["runs"]] == ["finetune", "smile"]
    for result in combined["runs"]:
        again = analyze_run(result["run"])
        assert json.loads(Path(result["run"], "linearity.json").read_text())["splits"].keys() == {"train", "eval"}
        for split, measured in again["splits"].items():
            for space, values in measured["spaces"].items():
                assert result["splits"][split]["spaces"][space]["mean_relative"] == pytest.approx(
                    values["mean_relative"], abs=1e-9
                )
    # SMILE's auxiliary head is read from its checkpoint; fine-tuning has none
    spaces = [set(r["splits"]["eval"]["spaces"]) for r in combined["runs"]]
    assert "source_probabilities" not in spaces[0] and "source_probabilities" in spaces[1]
    table = (out / "linearity.md").read_text()
    assert "| finetune-seed0 | finetune | eval |" in table and "| smile | train | 1 |" in table
    assert (out / "linearity.png").stat().st_size > 0

    # without training: the runs saved in --output_dir analysed again, with the same numbers
    for path in out.glob("linearity.*"):
        path.unlink()
    compare_methods.main(compare_argv(out, "--do_train", "False", "--do_eval", "True", "--analyze", "True"))
    assert len(trains) == 2  # nothing trained
    evaluated = json.loads((out / "linearity.json").read_text())["runs"]
    assert [r["splits"] for r in evaluated] == [r["splits"] for r in combined["runs"]]
