"""A checkpoint of the last step resumes with nothing left to train: the run (killed during its final evaluation or
export) ends with the weights, BatchNorm statistics and method state of the uninterrupted run, bit for bit.

The stock loop, resumed from step `max_steps` when `max_steps` is not a whole number of epochs, skips the batches the
last epoch trained and then trains one more step: a training forward pass moves every BatchNorm's running statistics
and adds 1 to its `num_batches_tracked`."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from transformers import Trainer

from smile_hf.checkpoints import CompleteCheckpointMixin

from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .test_resume_mid_epoch import STEPS, final_state, trainer

STEPS_PER_EPOCH = 3  # 40 images in batches of 16 (test_resume_mid_epoch's trainer)
assert STEPS % STEPS_PER_EPOCH  # the last step is inside an epoch: the stock loop would train past it


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The uninterrupted run (trained once for the module) and its checkpoint of the last step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    uninterrupted = trainer(output_dir, "smile")
    uninterrupted.train()
    torch.set_num_threads(threads)
    return uninterrupted, output_dir / f"checkpoint-{STEPS}"


def resumed_from_last_step(finished, tmp_path, **kwargs):
    uninterrupted, last = finished
    resumed = trainer(tmp_path, "smile", **kwargs)
    resumed.train(resume_from_checkpoint=str(last))
    return uninterrupted, resumed, safetensors.torch.load_file(str(last / "model.safetensors"))


@pytest.mark.parametrize("ignore_data_skip", [False, True])
def test_a_checkpoint_of_the_last_step_trains_nothing_more(finished, tmp_path, ignore_data_skip):
    uninterrupted, resumed, saved = resumed_from_last_step(finished, tmp_path, ignore_data_skip=ignore_data_skip)
    assert resumed.state.global_step == uninterrupted.state.global_step == STEPS
    expected, got = final_state(uninterrupted), final_state(resumed)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key  # bit for bit: no step, no training forward pass
    counters = {k: v for k, v in saved.items() if k.endswith("num_batches_tracked")}
    assert counters  # the student has BatchNorm layers, whose counters the checkpoint holds
    for key, value in counters.items():  # the resumed student's counters are the checkpoint's: no forward pass ran
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_the_check_can_fail_with_the_stock_resume(finished, tmp_path, monkeypatch):
    monkeypatch.setattr(CompleteCheckpointMixin, "_init_training_state", Trainer._init_training_state)
    _, resumed, saved = resumed_from_last_step(finished, tmp_path)
    assert resumed.state.global_step == STEPS + 1  # one step more than asked
    key = next(k for k in saved if k.endswith("num_batches_tracked"))
    assert resumed.model.state_dict()[key] == saved[key] + 1  # the difference the kill-and-resume runs found
