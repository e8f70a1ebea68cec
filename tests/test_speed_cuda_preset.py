"""The GPU preset of the speed benchmark (`python -m benchmarks.speed --device cuda`, `benchmarks/speed_gpu.py`) runs
its whole code path with tiny configs on the CPU (`--tiny`): every model is in the JSON, the ratios are the ones of
the stored step times, the counters are wired (an `.item()` injected into SMILE's step is counted). No timing
assertions. In-process (the import of transformers is shared with the other tests), so the torch thread count and
transformers' verbosity that `speed.main` sets are restored afterwards."""

from __future__ import annotations

import json
import os
import types
from collections import Counter

import numpy as np
import pytest
import torch
import transformers

from benchmarks import speed, speed_gpu, speed_models
from smile_hf import SmileTrainer
from smile_hf.profiling import DispatchCounter

MODELS = ["resnet50-b48", "resnet50-b128", "vit-b16", "convnext-t", "swin-t"]
SYNC = "aten::_local_scalar_dense"

pytestmark = pytest.mark.cpu_only("the tiny preset runs on the CPU by design (`--tiny`); test_cuda_counters runs when CUDA is present")


def run_main(argv: list[str]) -> dict:
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    try:
        return speed.main(argv)
    finally:
        torch.set_num_threads(threads)
        transformers.logging.set_verbosity(verbosity)


def run_tiny(tmp_path, *extra: str) -> tuple[dict, str]:
    out, md = tmp_path / "speed_gpu.json", tmp_path / "speed_gpu.md"
    returned = run_main(["--device", "cpu", "--tiny", "--output", str(out), "--markdown", str(md), *extra])
    payload = json.loads(out.read_text())
    assert payload["models"].keys() == returned["models"].keys()
    return payload, md.read_text()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("speed_gpu"))


def test_the_preset_is_chosen_by_the_device():
    assert speed.parse_args(["--device", "cuda"]).preset == "gpu"
    assert speed.parse_args(["--device", "cpu", "--tiny"]).preset == "gpu"
    cpu = speed.parse_args(["--device", "cpu"])  # the CPU benchmark and its outputs, unchanged
    assert cpu.preset == "cpu" and cpu.output == os.path.join(speed.RESULTS_DIR, "speed.json")
    assert speed.parse_args(["--device", "cuda", "--lora"]).preset == "cpu"
    assert speed_gpu.default_paths("cuda", tiny=False)[0] == os.path.join(speed.RESULTS_DIR, "speed_cuda.json")
    for device, tiny in (("cpu", True), ("cpu", False), ("cuda", True)):  # never a committed results file
        assert not speed_gpu.default_paths(device, tiny)[0].startswith(speed.RESULTS_DIR)


def test_tiny_preset_json(tiny_run):
    payload, markdown = tiny_run
    settings = payload["settings"]
    assert settings["tiny"] and settings["bf16"] and settings["device"] == "cpu"
    assert list(payload["models"]) == MODELS
    for name, model in payload["models"].items():
        times = model["times_ms"]
        assert set(times) == set(speed_gpu.MODES)
        assert all(len(ts) == model["rounds"] == 3 and all(t > 0 for t in ts) for ts in times.values())
        ft, smile, teacher = (np.array(times[m]) for m in ("stock-finetune", "smile", "teacher-forward"))
        expected = {
            "smile / stock-finetune": smile / ft,
            "smile / (stock-finetune + teacher-forward)": smile / (ft + teacher),
            "smiletrainer-finetune / stock-finetune": np.array(times["smiletrainer-finetune"]) / ft,
            "teacher-forward / stock-finetune": teacher / ft,
        }
        assert set(model["ratio"]) == set(expected)
        for key, values in expected.items():
            q = model["ratio"][key]
            assert q["median"] > 0 and q["n"] == 3
            assert q["median"] == pytest.approx(np.median(values), rel=1e-9)
            assert (q["p25"], q["p75"]) == pytest.approx((np.percentile(values, 25), np.percentile(values, 75)))
        for mode, ts in times.items():
            assert model["step_ms"][mode]["median"] == pytest.approx(np.median(ts))
        target = model["ratio"]["smile / (stock-finetune + teacher-forward)"]["median"] <= 1.05
        assert payload["targets_met"][name] is target

        counts = model["counts"]
        assert counts["smile"]["ema_step"] is not None and counts["stock-finetune"].get("ema_step") is None
        steps = [counts[m]["step"] for m in speed_gpu.MODES] + [counts["smile"]["ema_step"]]
        for step in steps:
            assert all(isinstance(n, int) and n > 0 for n in step["host_syncs"].values())
            assert step["host_syncs_total"] == sum(step["host_syncs"].values())
            assert isinstance(step["dispatched_ops"], int) and step["dispatched_ops"] > 0
            assert isinstance(step["cross_device_copies"], int)
        # SMILE runs a teacher forward and its loss terms on top of fine-tuning
        assert counts["smile"]["step"]["dispatched_ops"] > counts["stock-finetune"]["step"]["dispatched_ops"]
        assert "sync_debug_warnings" not in model and "cuda_profile" not in model  # CUDA only
        memory = model["memory"]
        assert set(memory) == set(speed_gpu.TRAINER_MODES)
        assert memory["smile"]["held_mib"] > memory["stock-finetune"]["held_mib"] > 0  # teacher + source head

    for needle in ("(a) SMILE / stock FT", "(b) SMILE / (stock FT + teacher forward)", "host syncs", "Device: cpu"):
        assert needle in markdown
    assert "proxy for kernel launches" in markdown


def test_report_only_rebuilds_the_markdown(tiny_run, tmp_path):
    payload, markdown = tiny_run
    out = tmp_path / "in.json"
    out.write_text(json.dumps(payload))
    run_main(["--device", "cpu", "--tiny", "--report_only", "--output", str(out), "--markdown", str(tmp_path / "r.md")])
    assert (tmp_path / "r.md").read_text() == markdown


def test_an_injected_item_is_counted(tiny_run, tmp_path, monkeypatch):
    """One `.item()` added to SmileTrainer's loss: one more host sync in SMILE's step (and SmileTrainer's
    fine-tuning step), none in the stock Trainer's."""
    compute_loss = SmileTrainer.compute_loss

    def with_item(self, *args, **kwargs):
        loss = compute_loss(self, *args, **kwargs)
        (loss[0] if isinstance(loss, tuple) else loss).item()
        return loss

    monkeypatch.setattr(SmileTrainer, "compute_loss", with_item)
    payload, _ = run_tiny(tmp_path, "--models", "vit-b16")
    before, after = tiny_run[0]["models"]["vit-b16"]["counts"], payload["models"]["vit-b16"]["counts"]
    for mode, added in (("stock-finetune", 0), ("smiletrainer-finetune", 1), ("smile", 1)):
        assert after[mode]["step"]["host_syncs"][SYNC] == before[mode]["step"]["host_syncs"].get(SYNC, 0) + added
        assert after[mode]["step"]["host_syncs_total"] == before[mode]["step"]["host_syncs_total"] + added
    assert after["smile"]["ema_step"]["host_syncs_total"] == before["smile"]["ema_step"]["host_syncs_total"] + 1


def test_only_the_stock_trainer_step_syncs():
    """The stock Trainer's step reads its loss twice (`logging_nan_inf_filter`: `torch.isnan(loss) or
    torch.isinf(loss)`); SmileTrainer's steps (fine-tuning, SMILE, SMILE with an EMA update) read nothing, and
    neither does the teacher forward. With the filter off, the stock step reads nothing either."""
    opts = types.SimpleNamespace(device="cpu", bf16=True)
    steppers, _ = speed_gpu.build_steppers(speed_gpu.TINY_MODELS["resnet50-b48"], opts)
    assert speed_gpu.ordinary_step_counts(steppers["stock-finetune"])["host_syncs"] == {SYNC: 2}
    assert speed_gpu.dispatch_counts(steppers["teacher-forward"])["host_syncs"] == {}
    for mode in ("smiletrainer-finetune", "smile"):
        assert speed_gpu.ordinary_step_counts(steppers[mode])["host_syncs"] == {}
    assert speed_gpu.ema_step_counts(steppers["smile"])["host_syncs"] == {}
    steppers["stock-finetune"].trainer.args.logging_nan_inf_filter = False
    assert speed_gpu.ordinary_step_counts(steppers["stock-finetune"])["host_syncs"] == {}


@pytest.mark.parametrize("mode", ["stock-finetune", "smile"])
def test_loop_stepper_steps_as_train_does(mode):
    """A `LoopStepper` step dispatches the operators of a step of `Trainer.train()` (per step: the difference between
    runs of 6 and 4 steps), data loading aside (the preset's batch is already on the device)."""
    opts = types.SimpleNamespace(device="cpu", bf16=True)
    spec = speed_gpu.TINY_MODELS["resnet50-b48"]
    source, student = speed_gpu.build_models(spec)
    batch = speed_gpu.device_batch(spec, "cpu")

    def counted(fn) -> Counter:
        with DispatchCounter() as counter:
            fn()
        loading = ("aten::select", "aten::stack", "aten::lift_fresh")  # indexing the dataset and collating
        return Counter({k: v for k, v in counter.ops.items() if k not in loading and not k.startswith("profiler::")})

    def train(steps: int) -> Counter:
        trainer = speed_gpu.build_trainer(mode, spec, source, student, opts)
        trainer.args.max_steps = steps
        dataset = speed_models.TensorDataset(batch["pixel_values"].repeat(steps, 1, 1, 1), batch["labels"].repeat(steps))
        trainer.train_dataset = dataset
        return counted(trainer.train)

    per_train_step = {k: v / 2 for k, v in (train(6) - train(4)).items()}
    # the stock Trainer's nan/inf filter reads the loss twice; SmileTrainer's step reads nothing
    assert per_train_step.get(SYNC, 0) == (2 if mode == "stock-finetune" else 0)
    assert per_train_step["aten::convolution"] > 0
    stepper = speed_gpu.LoopStepper(speed_gpu.build_trainer(mode, spec, source, student, opts), batch, "cpu")
    stepper.step()
    assert counted(stepper.step) == per_train_step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: sync debug mode and profiled kernel launches")
def test_cuda_counters():
    opts = types.SimpleNamespace(device="cuda", bf16=True)
    steppers, memory = speed_gpu.build_steppers(speed_gpu.TINY_MODELS["vit-b16"], opts)
    mode = torch.cuda.get_sync_debug_mode()
    warnings = speed_gpu.sync_debug_warnings(steppers["smile"])
    assert torch.cuda.get_sync_debug_mode() == mode
    assert warnings >= speed_gpu.ordinary_step_counts(steppers["smile"])["host_syncs_total"]
    profile = speed_gpu.profiled_launches(steppers["smile"])
    assert profile["launches_total"] > 0 and profile["gpu_kernels"] > 0
    assert memory["smile"]["peak_mib"] > memory["stock-finetune"]["peak_mib"] > 0
