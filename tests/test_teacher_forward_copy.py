"""The teacher's cheaper forward copy (`smile_hf.folding.ForwardCopy`): BatchNorm folded into the convolutions,
channels-last weights, bf16 weights. Each is checked against the unfolded float32 teacher (a second code path).

Tolerances: folding and channels-last change only the float32 rounding (the folded weights are computed in float64
and rounded once, the convolutions then sum in another order), so the outputs agree to 1e-5 relative to their largest
value (float32 epsilon is 1.2e-7; a few dozen layers of accumulated rounding stay well under 1e-5). bf16 keeps 8 bits
of mantissa (epsilon 2^-8 = 3.9e-3): a bf16 forward agrees with the float32 one to 5e-2 relative to the largest
value over a few layers.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageClassification

from smile_hf import EmaTeacher, FixedTeacher, SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import BackboneAdapter, record_outputs, stop_recording
from smile_hf.folding import conv_bn_pairs, folded_conv_parameters

from .testing_utils import IMAGE_SIZE, random_image_dataset, source_and_student, training_device_args

CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints", "fmnist-resnet-small")
FP32_RTOL = 1e-5
BF16_RTOL = 5e-2


def random_batchnorm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm statistics and an affine map far from the identity, so that folding changes weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                module.weight.copy_(0.5 + torch.rand(n, generator=g))
                module.bias.copy_(0.4 * torch.rand(n, generator=g) - 0.2)
    return model


def outputs_of(teacher, x):
    out = teacher(x, output_hidden_states=True)
    return [out.logits, out.feature_map, out.pooled, *out.hidden_maps]


def assert_close_relative(actual: list[torch.Tensor], expected: list[torch.Tensor], rtol: float) -> float:
    """Every tensor of `actual` equals the one of `expected` within `rtol` x its largest value; the largest
    relative difference."""
    assert len(actual) == len(expected)
    worst = 0.0
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        difference = ((a.float() - e.float()).abs().max() / e.float().abs().max().clamp_min(1e-12)).item()
        assert difference <= rtol, difference
        worst = max(worst, difference)
    return worst


def checkpoint_teachers(**options):
    source = AutoModelForImageClassification.from_pretrained(CHECKPOINT)
    adapter = BackboneAdapter(source)
    plain = EmaTeacher(copy.deepcopy(source), adapter, decay=0.9, update_every=1)
    return source, adapter, plain, EmaTeacher(copy.deepcopy(source), adapter, decay=0.9, update_every=1, **options)


@pytest.mark.parametrize(
    "options",
    [{"fold_batchnorm": True}, {"forward_channels_last": True}, {"fold_batchnorm": True, "forward_channels_last": True}],
    ids=["fold", "channels_last", "fold+channels_last"],
)
def test_bundled_checkpoint_teacher_copy_equals_unfolded(options):
    source, _, plain, cheap = checkpoint_teachers(**options)
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    assert_close_relative(outputs_of(cheap, x), outputs_of(plain, x), FP32_RTOL)
    shadow_bns = [m for m in cheap.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(shadow_bns) == sum(isinstance(m, nn.BatchNorm2d) for m in source.modules())  # the shadow is unfolded
    if options.get("fold_batchnorm"):
        pairs = cheap._forward_copy.pairs
        assert len(pairs) == len(shadow_bns)  # every BatchNorm of a ResNet follows a convolution
        folded = cheap.forward_model
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert all(isinstance(folded.get_submodule(bn), nn.Identity) for _, bn in pairs)
    assert set(cheap.state_dict()) == set(plain.state_dict())  # the copy is not part of the teacher's state


@pytest.mark.parametrize("family", ["regnet", "mobilenet_v2", "efficientnet"])
def test_tiny_conv_bn_families_fold_to_the_same_features(family):
    source, student = source_and_student(family)
    random_batchnorm_statistics(source)
    adapter = BackboneAdapter(student)
    plain = EmaTeacher(copy.deepcopy(source), adapter, decay=0.9)
    folded = EmaTeacher(copy.deepcopy(source), adapter, decay=0.9, fold_batchnorm=True)
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    assert_close_relative(outputs_of(folded, x), outputs_of(plain, x), FP32_RTOL)
    assert len(folded._forward_copy.pairs) > 0


def test_folded_weights_follow_the_formula():
    conv = nn.Conv2d(3, 4, 3, bias=True)
    bn = random_batchnorm_statistics(nn.Sequential(nn.BatchNorm2d(4))).eval()[0]
    weight, bias = folded_conv_parameters(conv, bn, torch.float32)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        by_hand = (conv(x) - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        by_hand = by_hand * bn.weight[:, None, None] + bn.bias[:, None, None]
        torch.testing.assert_close(nn.functional.conv2d(x, weight, bias), by_hand, rtol=1e-5, atol=1e-5)


def test_a_convolution_read_beyond_its_batchnorm_is_not_folded():
    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.other = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Identity()

        def forward(self, pixel_values):
            h = self.conv(pixel_values)
            return (self.bn(h) + self.other(h),)

    assert conv_bn_pairs(Branching().eval(), torch.randn(1, 3, 8, 8)) == []


def test_refolded_after_an_ema_update():
    source, student = source_and_student("resnet")
    random_batchnorm_statistics(source)
    random_batchnorm_statistics(student, seed=1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    adapter = BackboneAdapter(student)
    kwargs = dict(decay=0.5, update_every=1, include_buffers=True)  # the BatchNorm statistics move too
    plain = EmaTeacher(copy.deepcopy(source), adapter, **kwargs)
    folded = EmaTeacher(copy.deepcopy(source), adapter, fold_batchnorm=True, forward_channels_last=True, **kwargs)
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(2))
    before = outputs_of(folded, x)
    conv_path, bn_path = folded._forward_copy.pairs[0]
    weight_before = folded.forward_model.get_submodule(conv_path).weight.clone()
    for _ in range(2):
        plain.update(student)
        folded.update(student)
    assert folded._forward_copy.stale  # refolded on the next forward, from the updated shadow
    for a, b in zip(plain.state_dict().values(), folded.state_dict().values()):
        assert torch.equal(a, b)  # the EMA shadow itself is exact: the same as the plain teacher's
    after = outputs_of(folded, x)
    assert_close_relative(after, outputs_of(plain, x), FP32_RTOL)
    assert (after[0] - before[0]).abs().max() > 1e-3  # the teacher did move
    expected_weight, _ = folded_conv_parameters(
        folded.model.get_submodule(conv_path), folded.model.get_submodule(bn_path), torch.float32
    )
    weight = folded.forward_model.get_submodule(conv_path).weight
    assert torch.equal(weight, expected_weight) and not torch.equal(weight, weight_before)


def test_models_without_batchnorm_are_untouched():
    source, student = source_and_student("vit")
    adapter = BackboneAdapter(student)
    plain = EmaTeacher(copy.deepcopy(source), adapter)
    folded = EmaTeacher(copy.deepcopy(source), adapter, fold_batchnorm=True)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    for a, b in zip(outputs_of(folded, x), outputs_of(plain, x)):
        assert torch.equal(a, b)
    assert folded._forward_copy.pairs == []
    shadow = dict(folded.model.named_parameters())
    assert all(p is shadow[n] for n, p in folded.forward_model.named_parameters())  # nothing copied


def test_a_method_recording_the_teachers_layers_gets_the_teacher_itself():
    source, student = source_and_student("resnet")
    adapter = BackboneAdapter(student)
    teacher = FixedTeacher(copy.deepcopy(source), adapter, fold_batchnorm=True)
    conv = teacher.model.resnet.encoder.stages[0].layers[0].layer[0].convolution
    sink = []
    record_outputs(conv, sink)
    try:
        teacher(torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    finally:
        stop_recording(conv, sink)
    assert len(sink) == 1  # the unfolded convolution ran and fed its recorder


def test_bf16_teacher_keeps_an_exact_float32_shadow():
    source, student = source_and_student("resnet")
    random_batchnorm_statistics(source)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    adapter = BackboneAdapter(student)
    reference = EmaTeacher(copy.deepcopy(source), adapter, decay=0.999, update_every=1)
    bf16 = EmaTeacher(copy.deepcopy(source), adapter, decay=0.999, update_every=1, forward_dtype=torch.bfloat16)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    bf16(x)
    for _ in range(5):
        reference.update(student)
        bf16.update(student)
    for (name, a), b in zip(reference.model.named_parameters(), bf16.model.parameters()):
        assert b.dtype == torch.float32 and torch.equal(a, b), name  # the EMA after N updates is the float32 one
    out = outputs_of(bf16, x)
    assert out[0].dtype == torch.bfloat16
    copy_params = dict(bf16.forward_model.named_parameters())
    for name, p in bf16.model.named_parameters():
        assert torch.equal(copy_params[name], p.to(torch.bfloat16)), name  # re-cast from the updated shadow
    assert_close_relative(out, outputs_of(reference, x), BF16_RTOL)


def test_a_bf16_shadow_would_round_the_ema_increments_to_zero():
    weight, target = torch.ones(100), torch.full((100,), 1.05)  # student 5 % away, decay 0.999: steps of 5e-5
    shadow32, shadow16 = weight.clone(), weight.to(torch.bfloat16)
    for _ in range(10):
        torch._foreach_lerp_([shadow32], [target], 0.001)
        torch._foreach_lerp_([shadow16], [target.to(torch.bfloat16)], 0.001)
    assert torch.equal(shadow16.float(), weight)  # 5e-5 < half a bf16 step at 1 (3.9e-3): lost every time
    expected = 1.05 - 0.05 * 0.999**10
    torch.testing.assert_close(shadow32, torch.full((100,), expected), rtol=0, atol=1e-6)


def test_teacher_bf16_needs_bf16(tmp_path):
    with pytest.raises(ValueError, match="set bf16=True"):
        SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", teacher_bf16=True, use_cpu=True)


def test_compiled_folded_teacher_runs_the_compiled_copy():
    _, _, plain, folded = checkpoint_teachers(fold_batchnorm=True)
    folded.compile_model(backend="eager")
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert_close_relative(outputs_of(folded, x), outputs_of(plain, x), FP32_RTOL)
    assert folded.forward_model._compiled_call_impl is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_teacher_equals_eager():
    _, _, plain, graphed = checkpoint_teachers(fold_batchnorm=True, forward_channels_last=True)
    plain, graphed = plain.cuda(), graphed.cuda()
    graphed.compile_model(mode="reduce-overhead")  # inductor's CUDA graphs for the static-shape forward
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, device="cuda")
    for _ in range(3):  # recorded, then replayed
        out = [t.clone() for t in outputs_of(graphed, x)]
    assert_close_relative(out, outputs_of(plain, x), 1e-4)  # TF32 may be on for inductor's convolutions


def test_trainer_passes_the_teacher_options(tmp_path):
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", method="smile", max_steps=2,
        per_device_train_batch_size=4, ema_update_every=1, teacher_fold_batchnorm=True, teacher_channels_last=True,
        **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(8))
    trainer.train()
    copy_ = trainer.teacher._forward_copy
    assert copy_.fold_batchnorm and copy_.channels_last and copy_.pairs


def test_a_lora_teacher_refuses_bf16_weights_and_runs_the_students_modules():
    from smile_hf.lora import LoraEmaTeacher, build_teacher

    from .test_lora import lora_config

    peft = pytest.importorskip("peft")
    source, student = source_and_student("resnet")
    student = peft.get_peft_model(student, lora_config("resnet"))
    adapter = BackboneAdapter(student)
    with pytest.raises(ValueError, match="set teacher_bf16=False"):
        build_teacher(student, adapter, source, decay=0.9, forward_dtype=torch.bfloat16)
    teacher = build_teacher(student, adapter, source, decay=0.9, fold_batchnorm=True, forward_channels_last=True)
    assert isinstance(teacher, LoraEmaTeacher)
