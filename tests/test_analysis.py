"""The linearity analysis: the metric on hand-computed cases, a model that is exactly linear in feature space, the
label space of a linear trunk computed independently, and the script on a saved tiny run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from smile_hf import run as run_smile  # the driver of examples/run_smile.py
from smile_hf.analysis import (
    TABLE_COLUMNS,
    deviation_from_linearity,
    linearity_summary,
    linearity_table,
    load_source_head,
    measure_linearity,
    random_pairs,
)
from smile_hf.method_state import METHOD_STATE_NAME

from .testing_utils import IMAGE_SIZE, script_device_args, tiny_model

LAMBDAS = (0.1, 0.25, 0.5, 0.9)


def test_square_gives_lambda_times_one_minus_lambda():
    """f(x) = x^2 on the pair (2, 0): f(mix) = 4 lam^2, interpolation 4 lam, deviation 4 lam (1 - lam), scale 4."""
    f_a, f_b = torch.full((2, 1), 4.0, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
    mixed = [torch.full((2, 1), 4 * lam**2, dtype=torch.float64) for lam in LAMBDAS]
    result = deviation_from_linearity(f_a, f_b, mixed, LAMBDAS, "l2")
    expected = [lam * (1 - lam) for lam in LAMBDAS]
    assert result["scale"] == 4.0
    np.testing.assert_allclose(result["relative"], expected, rtol=1e-12)
    np.testing.assert_allclose(result["deviation"], [4 * e for e in expected], rtol=1e-12)
    assert result["mean_relative"] == pytest.approx(np.mean(expected))


def test_probabilities_total_variation_and_kl_by_hand():
    """p(x) = (1, 0), p(x') = (0, 1), p(mix) = (1/2, 1/2) at lam = 1/4: interpolation (1/4, 3/4), TV 1/4, scale 1,
    KL = 1/4 ln(1/2) + 3/4 ln(3/2)."""
    result = deviation_from_linearity(
        torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), [torch.tensor([[0.5, 0.5]])], [0.25], "tv"
    )
    assert result["scale"] == 1.0 and result["deviation"] == [0.25] and result["relative"] == [0.25]
    assert result["kl"][0] == pytest.approx(0.25 * np.log(0.5) + 0.75 * np.log(1.5), rel=1e-12)


def test_pairs_are_distinct_images_each_used_twice():
    a, b = random_pairs(10, seed=3)
    assert (a != b).all() and sorted(a.tolist()) == sorted(b.tolist()) == list(range(10))


def linear_resnet():
    """A tiny ResNet whose trunk is affine in its input: identity activations, the max pool replaced by an average
    pool, BatchNorm in eval mode (float64, so that the zero is exact to ~1e-12)."""
    model = tiny_model("resnet", 3, device="cpu")
    for module in model.modules():
        if hasattr(module, "activation"):
            module.activation = nn.Identity()
    model.resnet.embedder.pooler = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
    return model.double().eval()


def test_linear_model_is_linear_in_feature_space_and_its_label_space_matches_softmax():
    model = linear_resnet()
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(12, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,), generator=g)
    result = measure_linearity(model, pixel_values, labels, LAMBDAS, batch_size=5)
    spaces = result["spaces"]
    assert max(spaces["feature_map"]["relative"]) < 1e-10 and max(spaces["pooled"]["relative"]) < 1e-10
    assert "source_probabilities" not in spaces
    # label space, computed independently: the logits are affine, so those of a mixed image are the mixed logits
    a, b = random_pairs(12, seed=0)
    with torch.no_grad():
        z = model(pixel_values=pixel_values).logits
    p = z.softmax(-1)
    for j, lam in enumerate(LAMBDAS):
        p_mix = (lam * z[a] + (1 - lam) * z[b]).softmax(-1)
        interpolation = lam * p[a] + (1 - lam) * p[b]
        tv = 0.5 * (p_mix - interpolation).abs().sum(1).mean().item()
        assert spaces["probabilities"]["deviation"][j] == pytest.approx(tv, rel=1e-8)
        one_hot = nn.functional.one_hot(labels, 3).double()
        ce = nn.functional.cross_entropy(torch.log(p_mix), lam * one_hot[a] + (1 - lam) * one_hot[b]).item()
        assert spaces["probabilities"]["mixup_ce"][j] == pytest.approx(ce, rel=1e-8)
    assert spaces["probabilities"]["mean_relative"] > 0  # softmax is not linear


def test_relu_model_is_not_linear_and_source_head_is_measured():
    model = tiny_model("resnet", 3, device="cpu").eval()
    source_head = nn.Linear(16, 5)
    pixel_values = torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    result = measure_linearity(model, pixel_values, lambdas=(0.5,), source_head=source_head)
    assert result["spaces"]["feature_map"]["relative"][0] > 1e-3
    assert result["spaces"]["source_probabilities"]["scale"] > 0
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        measure_linearity(model, pixel_values, lambdas=(1.0,))


def load_script(name: str):
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_on_a_saved_run(tmp_path):
    analyze = load_script("analyze_linearity")
    run_dir = tmp_path / "run"
    run_smile.main([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "20", "--method", "smile",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "100",
        "--report_to", "none", "--disable_tqdm", "True", "--output_dir", str(run_dir), *script_device_args(),
    ])  # fmt: skip
    from transformers import AutoModelForImageClassification

    head = load_source_head(str(run_dir), AutoModelForImageClassification.from_pretrained(run_dir))
    saved = safetensors.torch.load_file(run_dir / "checkpoint-2" / METHOD_STATE_NAME)
    assert torch.equal(head.weight, saved["source_head.weight"]) and torch.equal(head.bias, saved["source_head.bias"])
    for checkpoint in run_dir.glob("checkpoint-*"):  # a run saved before the file had its name: read all the same
        (checkpoint / METHOD_STATE_NAME).rename(checkpoint / "smile_state.safetensors")
    former = load_source_head(str(run_dir), AutoModelForImageClassification.from_pretrained(run_dir))
    assert torch.equal(former.weight, saved["source_head.weight"]) and torch.equal(former.bias, saved["source_head.bias"])
    output = tmp_path / "table.md"
    results = analyze.main([str(run_dir), "--num_pairs", "6", "--lambdas", "0.3,0.5", "--output", str(output)])
    assert (run_dir / "linearity.json").is_file() and (run_dir / "linearity.md").is_file()
    assert (run_dir / "linearity.png").is_file() == (importlib.util.find_spec("matplotlib") is not None)
    written = json.loads((run_dir / "linearity.json").read_text())
    assert written["method"] == "smile" and set(written["splits"]) == {"train", "eval"}
    for split in written["splits"].values():
        assert split["num_pairs"] == 6 and split["lambdas"] == [0.3, 0.5]
        assert set(split["spaces"]) == {"probabilities", "source_probabilities", "pooled", "feature_map"}
    table = output.read_text().splitlines()
    assert len(table) == 11 and table[2].startswith("| run | smile | train |")
    assert table[7:] == linearity_summary(results).splitlines() and table[:4] == linearity_table(results).splitlines()
    assert table[9].startswith("| smile | train | 1 | ")  # one run: its values, no spread
    assert (tmp_path / "table.png").is_file() == (importlib.util.find_spec("matplotlib") is not None)
    assert json.loads(output.with_suffix(".json").read_text())["runs"][0]["splits"] == written["splits"]
    with pytest.raises(SystemExit):
        analyze.main([str(tmp_path)])  # not a saved run: one argparse error


def test_summary_is_the_mean_and_sample_std_over_runs():
    def run(method, value):
        measured = {"lambdas": [0.5], "spaces": {"pooled": {"mean_relative": value}}}
        return {"run": f"r{value}", "method": method, "splits": {"eval": measured}}

    rows = linearity_summary([run("smile", 0.1), run("smile", 0.3), run("finetune", 0.2)]).splitlines()
    pooled = [h for _, _, h in TABLE_COLUMNS].index("pooled: rel.")
    smile, finetune = (row.strip("|").split("|") for row in rows[2:])
    assert smile[:3] == [" smile ", " eval ", " 2 "] and smile[3 + pooled].strip() == f"0.2000 ± {np.std([0.1, 0.3], ddof=1):.4f}"
    assert finetune[3 + pooled].strip() == "0.2000" and smile[3].strip() == "-"
