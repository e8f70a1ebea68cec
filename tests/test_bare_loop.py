"""The speed benchmark's bare loop (`benchmarks.bare_loop.BareLoop`) runs every registered regulariser through the
standalone `TransferLoss`, without a Trainer.

Second code path: `plain_loop` of tests/test_transfer_loss_standalone.py (the documented plain PyTorch loop) on the
same models, data and hyperparameters. The first step's loss is computed before any optimizer step, from the same
weights and the same mix, so it must agree to float32 round-off (rtol 1e-5); the loops' optimizers differ (the
benchmark's Nesterov SGD against plain SGD), so later steps are only checked to be finite and to train.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks.bare_loop import BareLoop
from smile_hf import SmileTrainingArguments
from smile_hf.methods import REGULARIZERS

from .test_transfer_loss_standalone import BATCH, HYPERPARAMETERS, SEED, STEPS, loader, method_spec, plain_loop
from .testing_utils import TEST_DEVICE, random_image_dataset, source_and_student, training_device_args


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_bare_loop_runs_every_regulariser(name, tmp_path):
    source, student = source_and_student("resnet", num_source=7, num_target=3)
    data = random_image_dataset(STEPS * BATCH, num_labels=3, seed=5)
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method=method_spec(name), seed=SEED,
        max_steps=STEPS, learning_rate=0.05, weight_decay=0.0, **HYPERPARAMETERS.get(name, {}),
    )  # fmt: skip
    opts = SimpleNamespace(device=TEST_DEVICE, bf16=False)
    bare = BareLoop(method_spec(name), source, student, opts, args, batches=lambda: loader(data))
    before = {k: v.clone() for k, v in bare.model.state_dict().items()}
    outputs = [bare.step(batch) for batch in list(loader(data))[:2]]

    assert bare.step_index == 2
    assert all(torch.isfinite(o.loss) for o in outputs)
    _, method, reference = plain_loop(name, source, student, data)
    assert outputs[0].terms.keys() == reference[0].terms.keys()
    assert outputs[0].loss.item() == pytest.approx(reference[0].loss.item(), rel=1e-5)
    assert any(not torch.equal(v, before[k]) for k, v in bare.model.state_dict().items())  # it trained
    assert bare.method.state_dict().keys() == method.state_dict().keys()  # the same one-off state was prepared
