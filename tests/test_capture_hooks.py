"""The adapter's hooks are registered once per module and switched on per forward pass: no registration after the
first step, no hook piling up, and nothing read outside a captured forward pass (copies included)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import BackboneAdapter, record_outputs, stop_recording
from smile_hf.backbones.capture import Capture, capturing
from smile_hf.mixing import Mix

from .testing_utils import random_image_dataset, source_and_student, training_device_args


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class CountingLinear(nn.Linear):
    calls = 0

    def forward(self, x):
        CountingLinear.calls += 1
        return super().forward(x)


def test_no_hook_is_registered_after_the_first_step(tmp_path, monkeypatch):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile+manifold_mixup", max_steps=6,
        per_device_train_batch_size=4, save_strategy="no", disable_tqdm=True, final_finetune_fraction=0.0, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(24))
    registrations = []
    for name in ("register_forward_hook", "register_forward_pre_hook"):
        original = getattr(nn.Module, name)

        def spy(module, *a, _original=original, **k):
            registrations.append(trainer.state.global_step)
            return _original(module, *a, **k)

        monkeypatch.setattr(nn.Module, name, spy)
    trainer.train()
    assert registrations and set(registrations) == {0}  # all during the first step
    counts = hook_count(trainer.model), hook_count(trainer.teacher)
    trainer.train()  # a second run on the same models adds none
    assert (hook_count(trainer.model), hook_count(trainer.teacher)) == counts


def test_hooks_do_nothing_outside_a_capture_and_copies_capture_once(torch_device):
    _, model = source_and_student("resnet")
    adapter = BackboneAdapter(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32).to(torch_device)
    plain = model(pixel_values=x).logits
    head = CountingLinear(model.classifier[1].in_features, 5).to(torch_device)
    first = adapter.forward(model, x, source_head=head, output_hidden_states=True)
    assert hook_count(model) > 0
    torch.testing.assert_close(model(pixel_values=x).logits, plain, rtol=0, atol=0)  # inert outside a capture
    copied = copy.deepcopy(model)  # the copy keeps the hooks; installing again must not double them
    CountingLinear.calls = 0
    second = adapter.forward(copied, x, source_head=head, output_hidden_states=True)
    assert CountingLinear.calls == 1 and hook_count(copied) == hook_count(model)
    assert len(second.hidden_maps) == len(first.hidden_maps) == len(adapter.stages(model))
    torch.testing.assert_close(second.feature_map, first.feature_map, rtol=0, atol=0)
    torch.testing.assert_close(second.source_logits, first.source_logits, rtol=0, atol=0)


def test_manifold_mix_at_a_stage_equals_mixing_that_stage_by_hand(torch_device):
    """The stage mix (a hook installed once, active for one pass) against a second code path: the stages run by
    hand, the output of stage 1 mixed in between."""
    _, model = source_and_student("resnet")
    model.eval()
    adapter = BackboneAdapter(model)
    x = torch.randn(4, 3, 32, 32).to(torch_device)
    mix = Mix("manifold_mixup", 0.7, torch.tensor([2, 0, 3, 1]), stage=2).to(torch_device)
    out = adapter.forward(model, x, mix=mix, output_hidden_states=True)
    resnet = model.resnet
    hidden = resnet.embedder(x)
    stages = resnet.encoder.stages
    for index, stage in enumerate(stages):
        hidden = stage(hidden)
        if index == 1:
            hidden = mixed_stage = 0.7 * hidden + 0.3 * hidden[mix.perm]
    torch.testing.assert_close(out.feature_map, hidden, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.hidden_maps[1], mixed_stage, rtol=1e-5, atol=1e-6)  # the recorded one is mixed
    plain = adapter.forward(model, x)  # the mix hook is off again
    torch.testing.assert_close(plain.logits, model(pixel_values=x).logits, rtol=0, atol=0)


def test_recorded_outputs_are_every_call_until_stopped():
    """`record_outputs` (delta_tllib's hook points): every output, inside a captured pass or not, once per sink,
    compared with the layer's own function."""
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    sink: list = []
    record_outputs(layer, sink)
    record_outputs(layer, sink)  # a sink is added once
    plain = layer(x)
    with capturing(Capture(trunk=None, heads=())):
        captured = layer(2 * x)
    assert len(sink) == 2 and sink[0] is plain and sink[1] is captured
    torch.testing.assert_close(sink[1], torch.nn.functional.linear(2 * x, layer.weight, layer.bias), rtol=0, atol=0)
    stop_recording(layer, sink)
    layer(x)
    assert len(sink) == 2


def test_a_one_off_capture_records_every_call_and_leaves_no_hook():
    """`Capture.record` with `keep_hooks=False` (the probe's pass): each call's module, input and output, in call
    order, and afterwards the model has no hook of its own."""
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(4, 3)
    capture = Capture(trunk=None, heads=(), record=[model[2], model[0]])
    with capturing(capture, keep_hooks=False):
        out = model(x)
    assert [module for module, _, _ in capture.records] == [model[0], model[2]]  # call order, not listing order
    assert capture.records[0][1] is x and capture.records[1][2] is out
    torch.testing.assert_close(capture.records[1][1], torch.relu(model[0](x)), rtol=0, atol=0)
    assert hook_count(model) == 0 and not any(hasattr(m, "_smile_hf_capture_hooks") for m in model.modules())
