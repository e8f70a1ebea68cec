"""Every registered regulariser runs without a `Trainer`: `TransferLoss` built from a method spec and explicit
hyperparameters, a `RegularizerContext` built by hand, and a plain PyTorch loop (SGD, the EMA update and the per-step hook
called by hand).

The second code path is `SmileTrainer.train()` on copies of the same models, data (same order) and hyperparameters:
the loss and every term of every step, the trained weights and the regulariser's state must be the same. Both paths
run the same operations in the same order on the same device, so the tolerance is float32 round-off only (rtol
1e-5; in practice the values are equal bit for bit on the CPU).
"""

from __future__ import annotations

import copy

import pytest
import safetensors.torch
import torch
from torch.utils.data import DataLoader

from smile_hf import EmaTeacher, SmileTrainer, SmileTrainingArguments, TransferLoss
from smile_hf.backbones import BackboneAdapter, build_source_head_copy
from smile_hf.data import collate
from smile_hf.methods import REGULARIZERS, RegularizerContext, parse_method
from smile_hf.modeling import attach_source_head

from .testing_utils import TEST_DEVICE, clone, random_image_dataset, source_and_student, training_device_args

STEPS, BATCH, SEED, LR = 4, 4, 3, 0.05
HYPERPARAMETERS = {  # small one-off passes for DELTA; an EMA and a final phase that act within 4 steps for SMILE
    "delta": {"delta_attention_batches": 2, "delta_attention_epochs": 2},
    "delta_tllib": {"delta_attention_batches": 2, "delta_attention_epochs": 2},
    "smile": {"ema_decay": 0.8, "ema_update_every": 2, "final_finetune_fraction": 0.25},
    "rifle": {"rifle_num_reinits": 1},
}
RTOL = 1e-5


def method_spec(name: str) -> str:
    """The regulariser with a mixing strategy: its own default, else mixup (every regulariser through a mix)."""
    return name if REGULARIZERS[name].default_mixing else f"{name}+mixup"


def loader(data) -> DataLoader:
    return DataLoader(data, batch_size=BATCH, shuffle=False, collate_fn=collate)


class RecordingLoss:
    """Forwards to a `TransferLoss` and keeps every output (the Trainer path's losses, step by step)."""

    def __init__(self, loss_fn: TransferLoss):
        self.loss_fn, self.outputs = loss_fn, []

    def draw_mix(self, *args, **kwargs):
        return self.loss_fn.draw_mix(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        self.outputs.append(self.loss_fn(*args, **kwargs))
        return self.outputs[-1]


def trainer_run(name, source, student, data, tmp_path):
    """`SmileTrainer.train()`: SGD at a constant lr, no clipping, no weight decay, the data in order."""
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args(), method=method_spec(name), seed=SEED,
        max_steps=STEPS, per_device_train_batch_size=BATCH, optim="sgd", learning_rate=LR, weight_decay=0.0,
        lr_scheduler_type="constant", max_grad_norm=0.0, save_strategy="no", disable_tqdm=True,
        **HYPERPARAMETERS.get(name, {}),
    )  # fmt: skip
    trainer = SmileTrainer(model=clone(student), args=args, teacher_model=clone(source), train_dataset=data)
    trainer.get_train_dataloader = lambda: loader(data)  # the same order as the plain loop
    trainer.loss_fn = recorder = RecordingLoss(trainer.loss_fn)
    trainer.train()
    return trainer, recorder.outputs


def plain_loop(name, source, student, data):
    """The same training without a Trainer: TransferLoss from the method spec, a RegularizerContext, a PyTorch loop."""
    model = clone(student).train()
    adapter = BackboneAdapter(model)
    hyperparameters = HYPERPARAMETERS.get(name, {})
    regulariser, _ = parse_method(method_spec(name))
    settings = REGULARIZERS[regulariser](**hyperparameters)  # the teacher's EMA settings (SMILE's hyperparameters)
    if settings.needs_source_head:
        attach_source_head(model, build_source_head_copy(adapter, source))
    teacher = None
    if settings.needs_teacher:
        decay = settings.ema_decay if settings.ema_teacher else 1.0
        teacher = EmaTeacher(clone(source), adapter, decay, getattr(settings, "ema_update_every", 10)).to(TEST_DEVICE)
    loss_fn = TransferLoss(method_spec(name), adapter, teacher, seed=SEED, **hyperparameters)
    method = loss_fn.regularizer.to(TEST_DEVICE)
    context = RegularizerContext(model, adapter, lambda: loader(data), TEST_DEVICE, teacher, seed=SEED, show_progress=False)
    method.setup(context)
    method.prepare(context)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    final_start = STEPS - round(STEPS * getattr(method, "final_finetune_fraction", 0.0))
    outputs, batches = [], iter(loader(data))
    for step in range(STEPS):
        batch = next(batches)
        x, y = batch["pixel_values"].to(TEST_DEVICE), batch["labels"].to(TEST_DEVICE)
        final = method.has_final_phase and step >= final_start
        mix = None if final else loss_fn.draw_mix(x, model, step)
        outputs.append(loss_fn(model, x, y, mix, final_phase=final))
        outputs[-1].loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher is not None and method.ema_teacher and teacher.should_update(step + 1) and not final:
            teacher.update(model)
        method.on_step_end(context, step + 1, STEPS)
    return model, method, outputs


LABELLED_ONLY = sorted(name for name, cls in REGULARIZERS.items() if not cls.requires_unlabeled)
"""The regularisers that train on labelled batches alone (FixMatch's step, which needs unlabelled images, is checked
against a hand computation in tests/test_unlabeled.py)."""


@pytest.mark.parametrize("name", LABELLED_ONLY)
def test_every_regulariser_runs_in_a_plain_loop_as_in_the_trainer(name, tmp_path):
    source, student = source_and_student("resnet", num_source=7, num_target=3)
    data = random_image_dataset(STEPS * BATCH, num_labels=3, seed=5)

    model, method, outputs = plain_loop(name, source, student, data)
    trainer, trainer_outputs = trainer_run(name, source, student, data, tmp_path)

    assert len(outputs) == len(trainer_outputs) == STEPS
    for step, (mine, theirs) in enumerate(zip(outputs, trainer_outputs)):
        assert mine.terms.keys() == theirs.terms.keys(), step
        for term, (weight, value) in mine.terms.items():
            assert weight == theirs.terms[term][0]
            assert float(value.detach()) == pytest.approx(float(theirs.terms[term][1].detach()), rel=RTOL), (step, term)
        assert torch.isfinite(mine.loss) and float(mine.loss.detach()) == pytest.approx(float(theirs.loss.detach()), rel=RTOL), step
    trained = trainer.model.state_dict()
    moved = 0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=RTOL, atol=1e-6, msg=key)
        moved += not torch.equal(value, student.state_dict().get(key, value))
    assert moved > 0  # the loop did train
    state, trainer_state = method.state_dict(), trainer.regularizer.state_dict()
    assert state.keys() == trainer_state.keys()
    for key, value in state.items():
        torch.testing.assert_close(value, trainer_state[key], rtol=RTOL, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_regulariser_state_moves_and_round_trips_through_safetensors(name, tmp_path):
    """The state lives in buffers: `.to()` moves all of it, and a fresh regulariser loads it from a file."""
    source, student = source_and_student("resnet", num_source=7, num_target=3)
    data = random_image_dataset(2 * BATCH, num_labels=3, seed=5)
    model = clone(student)
    adapter = BackboneAdapter(model)
    regulariser, _ = parse_method(method_spec(name))
    method = REGULARIZERS[regulariser](**HYPERPARAMETERS.get(name, {}))
    if method.needs_source_head:
        attach_source_head(model, build_source_head_copy(adapter, source))
    teacher = EmaTeacher(clone(source), adapter) if method.needs_teacher else None
    context = RegularizerContext(model, adapter, lambda: loader(data), TEST_DEVICE, teacher, show_progress=False)
    method.setup(context)
    method.prepare(context)
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    assert set(state) == {k for k, _ in method.named_buffers()}
    if name in ("l2sp", "delta", "delta_tllib", "cotuning"):
        assert state  # w0, the attention, R
    on_meta = copy.deepcopy(method).to("meta")
    assert all(b.device.type == "meta" for b in on_meta.buffers())
    path = tmp_path / "state.safetensors"
    safetensors.torch.save_file({k: v.cpu().contiguous() for k, v in state.items()}, str(path))
    fresh = REGULARIZERS[regulariser](**HYPERPARAMETERS.get(name, {}))
    fresh.load_state_dict(safetensors.torch.load_file(str(path)))
    assert fresh.state_dict().keys() == state.keys()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key].cpu()), key
