"""The choice of the tests' device (`SMILE_HF_TEST_DEVICE`): what each value resolves to on machines with and
without an accelerator, the clear error of a bad value (a usage error at session start, in a fresh pytest), the
Trainer arguments and script arguments that follow the device, and the skip of multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smile_hf import SmileTrainingArguments

from .testing_utils import (
    DEVICE_VARIABLE,
    TEST_DEVICE,
    available_accelerator,
    resolve_test_device,
    script_device_args,
    subprocess_env,
    training_device_args,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_ACCELERATOR = (None, 0)
ONE_GPU, TWO_GPUS = ("cuda", 1), ("cuda", 2)


@pytest.mark.parametrize(
    "value, accelerator, expected",
    [
        (None, NO_ACCELERATOR, "cpu"),
        ("", ONE_GPU, "cpu"),  # set but empty: the default
        ("  ", ONE_GPU, "cpu"),
        ("cpu", ONE_GPU, "cpu"),
        ("cpu", NO_ACCELERATOR, "cpu"),
        ("cuda", ONE_GPU, "cuda:0"),
        ("cuda:0", ONE_GPU, "cuda:0"),
        (" cuda:0 ", TWO_GPUS, "cuda:0"),
        ("mps", ("mps", 1), "mps:0"),
    ],
)
def test_a_value_resolves_to_a_device_of_this_machine(value, accelerator, expected):
    assert resolve_test_device(value, accelerator) == expected


@pytest.mark.parametrize(
    "value, accelerator, message",
    [
        ("gpu", ONE_GPU, r"SMILE_HF_TEST_DEVICE='gpu' is not a torch device"),
        ("cuda:x", ONE_GPU, r"'cuda:x' is not a torch device"),
        ("CUDA", ONE_GPU, r"'CUDA' is not a torch device"),
        ("cuda", NO_ACCELERATOR, r"'cuda': this machine has no cuda device \(no accelerator\)"),
        ("cuda:0", ("mps", 1), r"no cuda device \(1 mps device\(s\)\)"),
        ("meta", ONE_GPU, r"'meta': this machine has no meta device"),
        ("cuda", ("cuda", 0), r"no cuda device"),
        ("cuda:1", ONE_GPU, r"'cuda:1': this machine has 1 cuda device\(s\) \(0..0\)"),
        ("cuda:1", TWO_GPUS, r"always trains on cuda:0.*CUDA_VISIBLE_DEVICES=1.*SMILE_HF_TEST_DEVICE=cuda"),
    ],
)
def test_a_bad_value_is_a_clear_error(value, accelerator, message):
    with pytest.raises(ValueError, match=message):
        resolve_test_device(value, accelerator)


def test_the_machine_is_asked_when_no_accelerator_is_given():
    kind, count = available_accelerator()
    assert resolve_test_device("cpu") == "cpu"
    if kind is None:
        with pytest.raises(ValueError, match="no cuda device"):
            resolve_test_device("cuda")
    else:
        assert count >= 1 and resolve_test_device(kind) == f"{kind}:0"


def test_the_fixture_gives_the_session_device(torch_device):
    assert torch_device == TEST_DEVICE == resolve_test_device(os.environ.get(DEVICE_VARIABLE))


@pytest.mark.parametrize("device, use_cpu", [("cpu", True), ("cuda:0", False), ("mps:0", False)])
def test_trainer_and_script_arguments_follow_the_device(device, use_cpu, tmp_path):
    assert training_device_args(device) == {"use_cpu": use_cpu}
    assert script_device_args(device) == ["--use_cpu", str(use_cpu)]
    if device == "cpu":  # the arguments do put the Trainer there (an accelerator's own case needs one)
        args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(device))
        assert args.device.type == "cpu"


def test_the_session_default_arguments_are_those_of_the_test_device():
    assert training_device_args() == training_device_args(TEST_DEVICE)
    assert training_device_args()["use_cpu"] == (TEST_DEVICE == "cpu")


def test_a_bad_value_stops_a_pytest_session_at_its_start(tmp_path):
    """A fresh pytest with a device this machine lacks: exit status 4 (usage error), one line naming the variable,
    and no test run."""
    env = subprocess_env(**{DEVICE_VARIABLE: "no-such-device"})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_architecture.py::test_cycle_finder_finds_a_cycle"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 4, result.stdout + result.stderr
    assert "ERROR: SMILE_HF_TEST_DEVICE='no-such-device' is not a torch device" in result.stderr
    assert "passed" not in result.stdout


@pytest.mark.parametrize(
    "on_accelerator, accelerator, skipped",
    [(False, NO_ACCELERATOR, False), (True, ONE_GPU, True), (True, TWO_GPUS, False), (True, ("cuda", 4), False)],
)
def test_two_process_tests_are_skipped_without_a_device_per_rank(on_accelerator, accelerator, skipped, monkeypatch):
    from . import testing_utils

    monkeypatch.setattr(testing_utils, "ON_ACCELERATOR", on_accelerator)
    monkeypatch.setattr(testing_utils, "TEST_DEVICE", "cuda:0" if on_accelerator else "cpu")
    monkeypatch.setattr(testing_utils, "available_accelerator", lambda: accelerator)
    mark = testing_utils.requires_a_device_per_rank(2)
    assert mark.name == "skipif" and mark.args == (skipped,)
    if skipped:
        assert mark.kwargs["reason"] == "2 processes on cuda:0 need 2 devices; this machine has 1"


def test_accelerator_runs_use_float32_convolutions_and_deterministic_cudnn():
    """What the session sets on a CUDA device (in a fresh interpreter, not to change this session's flags): cuDNN's
    convolutions (TF32 by default) and matmuls in full float32; deterministic cuDNN kernels."""
    code = (
        "import torch\n"
        "from tests.conftest import exact_float32_and_deterministic_cudnn\n"
        "exact_float32_and_deterministic_cudnn()\n"
        "print(torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision,\n"
        "      torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ieee", "ieee", "True", "False"]
