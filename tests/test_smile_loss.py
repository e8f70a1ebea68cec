"""SmileTrainer.compute_loss against the SMILE loss rebuilt by hand from the models' own outputs.

The hand computation reads the feature map and pooled feature straight from the base model (`model.resnet(x)`,
`model.vit(x)`, ...), not through the adapter's hooks, and writes each term as in the table of docs/methods.md (the
formulas of the SMILE reference implementation). Tolerance: 1e-5 relative (float32; both paths run the same kernels on the
same inputs, only the summation order of the final reductions differs).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smile_hf import Mix, SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import SOURCE_HEAD_NAME

from .testing_utils import IMAGE_SIZE, source_and_student, training_device_args

RTOL = 1e-5


def base_features(family: str, model, pixel_values):
    """(feature map B x C x H x W, pooled B x D) of a model, read directly from its base model."""
    base = model.base_model(pixel_values)
    if family == "resnet":
        return base.last_hidden_state, base.pooler_output.flatten(1)
    if family == "convnext":
        return base.last_hidden_state, base.pooler_output
    if family == "vit":
        tokens = base.last_hidden_state
        patches = tokens[:, 1:]  # drop the CLS token
        side = int(patches.shape[1] ** 0.5)
        return patches.transpose(1, 2).reshape(len(tokens), -1, side, side), tokens[:, 0]
    if family == "swin":
        tokens = base.last_hidden_state
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(len(tokens), -1, side, side), base.pooler_output
    raise ValueError(family)


def head_of(family, model):
    return model.classifier[1] if family == "resnet" else model.classifier


def make_trainer(student, source, tmp_path, **kwargs):
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", **training_device_args(), **kwargs
    )
    return SmileTrainer(model=student, args=args, teacher_model=source)


TEACHER_OPTIONS = {"teacher_fold_batchnorm": True, "teacher_channels_last": True}
"""The teacher's cheaper forward (BatchNorm folded, channels-last): the same loss within the same tolerance."""


@pytest.mark.parametrize(
    "family, options",
    [("resnet", {}), ("vit", {}), ("convnext", {}), ("swin", {}), ("resnet", TEACHER_OPTIONS)],
    ids=["resnet", "vit", "convnext", "swin", "resnet-folded-teacher"],
)
def test_smile_loss_equals_hand_computation(family, options, tmp_path, torch_device):
    source, student = source_and_student(family, num_source=7, num_target=3)
    if options:  # BatchNorm statistics far from the identity, so that folding changes the weights
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for bn in [m for m in source.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
                bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
                bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
    trainer = make_trainer(student, source, tmp_path, method="smile", **options)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g).to(torch_device)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=torch_device)
    lam, perm = 0.7, torch.tensor([3, 0, 5, 1, 2, 4], device=torch_device)
    model = trainer.model.train()

    output = trainer.loss_fn(model, x, y, Mix("mixup", lam, perm))
    loss = output.loss
    assert bool(options) == bool(trainer.teacher._forward_copy and trainer.teacher._forward_copy.pairs)

    with torch.no_grad():
        mixed = lam * x + (1 - lam) * x[perm]
        logits = model(pixel_values=mixed).logits
        feat_s, pooled_s = base_features(family, model, mixed)
        aux_logits = getattr(model, SOURCE_HEAD_NAME)(pooled_s)
        source.eval()
        p_t = torch.softmax(source(pixel_values=x).logits, dim=-1)
        feat_t, _ = base_features(family, source, x)

        l_main = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])

        def soft_ce(q, z):
            return (-(q * F.log_softmax(z, dim=-1)).sum(dim=1)).mean()

        l_aux = lam * soft_ce(p_t, aux_logits) + (1 - lam) * soft_ce(p_t[perm], aux_logits)
        height, width = feat_s.shape[-2:]
        assert height * width >= 4, "the feature map must be at least 2x2 to tell it from the pooled vector"
        l_reg = torch.sqrt(((lam * feat_t + (1 - lam) * feat_t[perm] - feat_s) ** 2).sum()) / (height * width)
        heads = [head_of(family, model), getattr(model, SOURCE_HEAD_NAME)]
        l_cls = 0.5 * sum((p**2).sum() for h in heads for p in (h.weight, h.bias))
        expected = l_main + 0.1 * l_aux + 0.01 * l_reg + 1e-4 * l_cls

    torch.testing.assert_close(loss.detach(), expected, rtol=RTOL, atol=0)
    terms = {name: value.item() for name, (_, value) in output.terms.items()}
    for name, value in [("main", l_main), ("aux", l_aux), ("reg", l_reg), ("cls", l_cls)]:
        assert terms[name] == pytest.approx(value.item(), rel=RTOL)
    assert output.mix.lam == pytest.approx(lam)


def test_compute_loss_is_the_loss_of_the_drawn_mix_and_logs_its_terms(tmp_path, torch_device):
    """`compute_loss` at step 0 = the loss object under the mix of (seed, step 0, micro-batch 0), and `log` reports
    each of its terms."""
    source, student = source_and_student("resnet")
    trainer = make_trainer(student, source, tmp_path, method="smile", seed=7)
    x = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=torch_device)
    model = trainer.model.train()

    loss = trainer.compute_loss(model, {"pixel_values": x, "labels": y})
    mix = trainer.loss_fn.draw_mix(x, model, step=0, micro_step=0)
    expected = trainer.loss_fn(model, x, y, mix)

    torch.testing.assert_close(loss.detach(), expected.loss.detach(), rtol=RTOL, atol=0)
    trainer.log({})
    logged = trainer.state.log_history[-1]
    for name, (_, value) in expected.terms.items():
        assert logged[f"loss_{name}"] == pytest.approx(value.item(), rel=RTOL)
    assert logged["mix_lambda"] == pytest.approx(mix.lam)


def test_default_mix_follows_smile_convention(tmp_path, torch_device):
    """lambda ~ Beta(0.2, 0.2) flipped to >= 0.5, a permutation, from a generator keyed by (seed, step, micro, rank)."""
    source, student = source_and_student("resnet")
    trainer = make_trainer(student, source, tmp_path, method="smile", seed=123)
    x = torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    mixes = [trainer.loss_fn.draw_mix(x, trainer.model, step=0, micro_step=micro) for micro in range(2)]
    import numpy as np

    for micro, mix in enumerate(mixes):
        rng = np.random.default_rng([123, 0, micro, 0])
        lam = rng.beta(0.2, 0.2)
        assert mix.lam == pytest.approx(max(lam, 1 - lam))
        assert mix.perm.tolist() == rng.permutation(8).tolist()
    assert mixes[0].lam >= 0.5 and mixes[1].lam >= 0.5


def test_final_phase_loss_is_plain_finetuning(tmp_path, torch_device):
    source, student = source_and_student("resnet")
    trainer = make_trainer(student, source, tmp_path, method="smile", final_finetune_fraction=0.25)
    trainer.state.max_steps, trainer.state.global_step = 8, 6  # steps 6 and 7 are the final phase
    assert trainer.final_phase_start == 6 and trainer.in_final_phase(6) and not trainer.in_final_phase(5)
    teacher_calls = []
    source.base_model.register_forward_hook(lambda *a: teacher_calls.append(1))
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    y = torch.tensor([0, 1, 2, 1], device=torch_device)
    model = trainer.model.train()

    loss = trainer.compute_loss(model, {"pixel_values": x, "labels": y})

    with torch.no_grad():
        heads = [model.classifier[1], getattr(model, SOURCE_HEAD_NAME)]
        l_cls = 0.5 * sum((p**2).sum() for h in heads for p in h.parameters())
        expected = F.cross_entropy(model(pixel_values=x).logits, y) + 1e-4 * l_cls
    torch.testing.assert_close(loss.detach(), expected, rtol=RTOL, atol=0)
    assert teacher_calls == []  # the teacher did not run
    trainer.log({})
    logged = trainer.state.log_history[-1]
    assert {k for k in logged if k.startswith(("loss_", "mix_"))} == {"loss_main", "loss_cls", "mix_lambda"}
    assert logged["mix_lambda"] == 1.0  # no mix was applied
    with pytest.raises(ValueError, match="final plain phase"):
        trainer.loss_fn(
            model, x, y, Mix("mixup", 0.7, torch.tensor([1, 0, 3, 2], device=torch_device)), final_phase=True
        )


def test_student_backbone_runs_once_per_step(tmp_path, torch_device):
    source, student = source_and_student("vit")
    trainer = make_trainer(student, source, tmp_path, method="smile")
    counts = {"student": 0, "teacher": 0}
    student.base_model.register_forward_hook(lambda *a: counts.__setitem__("student", counts["student"] + 1))
    source.base_model.register_forward_hook(lambda *a: counts.__setitem__("teacher", counts["teacher"] + 1))
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device)
    y = torch.tensor([0, 1, 2, 1], device=torch_device)
    trainer.compute_loss(trainer.model.train(), {"pixel_values": x, "labels": y})
    assert counts == {"student": 1, "teacher": 1}


def test_teacher_forward_has_no_autograd_state(tmp_path, torch_device):
    source, student = source_and_student("resnet")
    trainer = make_trainer(student, source, tmp_path, method="smile")
    out = trainer.teacher(torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=torch_device))
    assert not out.logits.requires_grad and out.logits.grad_fn is None
    assert not out.feature_map.requires_grad
    assert not trainer.teacher.model.training
