"""The benchmark scripts run end to end on tiny settings and write what the docs cite (no timing assertions).
They run as the docs run them: `python -m benchmarks.<name>` from the repository root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .testing_utils import TEST_DEVICE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(REPO, "checkpoints", "fmnist-resnet-tiny")


def run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_speed_smoke(tmp_path):
    out, md = tmp_path / "speed.json", tmp_path / "speed.md"
    # small-cnn is a model of the cpu preset; on a CUDA device the default preset is the gpu one
    result = run(
        "speed", "--models", "small-cnn", "--methods", "finetune,mixup,smile", "--rounds", "2", "--chunks", "1",
        "--teacher_variants", "fold+cl", "--output", str(out), "--markdown", str(md), "--device", TEST_DEVICE, "--preset", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    model = payload["models"]["small-cnn"]
    assert set(model["ratio"]) == {"finetune", "mixup", "smile", "smile[fold+cl]"}  # the teacher option beside SMILE
    assert model["ratio"]["finetune"]["median"] == pytest.approx(1.0)
    assert model["ratio"]["smile"]["n"] == 2
    assert model["ema"]["tensors"] > 0 and model["ema"]["update_every"] == 10
    assert {"finetune", "smile"} <= set(model["memory"])
    # SMILE holds a teacher and an auxiliary head on top of what fine-tuning holds
    assert model["memory"]["smile"]["held_mib"] > model["memory"]["finetune"]["held_mib"]
    assert {"teacher forward", "student forward", "backward"} <= set(model["profile"]["smile"])
    assert set(model["profile"]) == {"finetune", "mixup", "smile"}  # every method through the bare loop
    assert "mixing" in model["profile"]["mixup"] and "teacher forward" not in model["profile"]["mixup"]
    # one EMA update averages every parameter of the backbone (the ResNet's `resnet` module, no buffers)
    from benchmarks.speed_models import MODELS, build_models

    source, _ = build_models(MODELS["small-cnn"])
    assert model["ema"]["tensors"] == len(list(source.resnet.parameters()))
    assert set(model["trainer_vs_bare"]) == {"smile", "finetune"}
    assert "SMILE step / fine-tuning step" in md.read_text()
    assert "Bare-loop step of every method" in md.read_text()
    assert "| smile[fold+cl] |" in md.read_text() and len(payload["settings"]["load_average"]["end"]) == 3


def test_step_memory_tracker_counts_allocations_only(torch_device):
    import torch

    from benchmarks.memory import PeakTensorMemory

    weight = torch.nn.Parameter(torch.randn(256, 256, device=torch_device))  # 256 KiB, held before the step
    x = torch.randn(4, 256, device=torch_device)
    with PeakTensorMemory() as tracker:
        torch.nn.functional.linear(x, weight).sum().backward()  # `t()` of the weight is a view, not an allocation
        with torch.no_grad():
            weight.add_(weight.grad, alpha=-0.1)  # in place: nothing allocated
    nbytes = weight.numel() * 4
    # the gradient and a few small tensors (the output: 4 KiB); the weight itself is not counted (it was: 2x)
    assert nbytes <= tracker.peak <= nbytes + 8 * 1024
    assert tracker.current == nbytes  # .grad is alive, the rest freed


def test_speed_lora_smoke(tmp_path):
    pytest.importorskip("peft", reason="the LoRA section needs the optional `peft` package")
    out, md = tmp_path / "lora.json", tmp_path / "lora.md"
    result = run("speed", "--lora", "--models", "tiny-vit", "--rounds", "2", "--output", str(out), "--markdown", str(md),
                 "--device", TEST_DEVICE)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["settings"]["section"] == "lora" and list(payload["models"]) == ["tiny-vit"]
    model = payload["models"]["tiny-vit"]
    modes = {"lora-finetune", "lora-smile", "full-finetune", "full-smile"}
    assert set(model["ratio"]) == set(model["memory"]) == modes
    assert model["ratio"]["lora-finetune"]["median"] == pytest.approx(1.0) and model["ratio"]["lora-smile"]["n"] == 2
    memory = model["memory"]
    ratio = model["memory_ratio"]["lora-smile / lora-finetune"]
    assert ratio == pytest.approx(memory["lora-smile"]["peak_mib"] / memory["lora-finetune"]["peak_mib"])
    # the LoRA teacher is an adapter, a source head and buffer copies on the shared base, not a second model: what
    # SMILE-LoRA holds on top of FT-LoRA is that teacher (plus the auxiliary head), far less than a full-copy teacher
    # `held_mib` is each mode's own tensors on both devices (on CUDA not the allocator's total, which counts the four
    # modes' models alive together)
    teacher = model["teacher_mib"]
    assert 0 < teacher["lora-smile"] < teacher["full-smile"] / 10
    assert memory["lora-smile"]["held_mib"] - memory["lora-finetune"]["held_mib"] < teacher["full-smile"] / 5
    assert memory["full-smile"]["held_mib"] - memory["full-finetune"]["held_mib"] >= teacher["full-smile"]
    trainable = model["trainable_parameters_m"]
    assert trainable["lora-finetune"] < trainable["full-finetune"] / 5
    assert "SMILE-LoRA / FT-LoRA" in md.read_text()
    # the report is rebuilt from the JSON alone
    again = run("speed", "--report_only", "--output", str(out), "--markdown", str(tmp_path / "again.md"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again.md").read_text() == md.read_text()


@pytest.mark.skipif(not os.path.isfile(os.path.join(CHECKPOINT, "config.json")), reason="no bundled checkpoint")
@pytest.mark.cpu_only("benchmarks/accuracy.py trains on the CPU (use_cpu=True in the benchmark itself)")
def test_accuracy_smoke(tmp_path):
    out, md, png = tmp_path / "accuracy.json", tmp_path / "accuracy.md", tmp_path / "accuracy.png"
    result = run(
        "accuracy", "--targets", "digits", "--shots", "2", "--seeds", "0,1", "--max_steps", "3",
        "--methods", "finetune,smile,smile[aux_lambda=0.0]", "--extra_methods", "", "--workers", "1",
        "--output", str(out), "--markdown", str(md), "--plot", str(png),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["settings"]["methods"] == ["finetune", "smile", "smile[aux_lambda=0.0]"]
    assert len(payload["runs"]) == 6 and all(r["steps"] == 3 for r in payload["runs"])
    assert all(r["eval_images"] == 899 for r in payload["runs"])  # the whole digits test half
    cell = payload["summary"]["digits"]["2"]["smile"]
    assert cell["seeds"] == [0, 1] and len(cell["accuracy"]) == 2 and 0.0 <= cell["ece_mean"] <= 1.0
    assert [r["shots"] for r in payload["smile_vs_finetune"]] == [2, 2]
    assert "| finetune |" in md.read_text()
    assert png.stat().st_size > 0


def test_paper_table_fails_clearly_offline(tmp_path):
    result = run("paper_table", "--output", str(tmp_path / "p.json"), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert "needs the Hugging Face Hub" in result.stderr and "microsoft/resnet-50" in result.stderr
    assert not (tmp_path / "p.json").exists()
