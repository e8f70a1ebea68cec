"""The SMILE loss, DELTA's regulariser and the export, on the families whose layout differs from ResNet / ViT /
ConvNeXt / Swin (test_smile_loss.py): registers, a CLIP-like and a SigLIP vision tower (no class token), BEiT (mean
pooling), distilled LeViT (two heads, each behind its own BatchNorm), SwinV2, MobileViT, and timm (skipped without
timm).

Each expected value is rebuilt by hand from the model's own modules (the base model or vision tower called directly,
`forward_features` / `forward_head` for timm), not through the adapter's hooks, with the formulas of docs/methods.md.
Models run in eval mode on both sides (dropout off) so that the two computations see the same function. Tolerance:
1e-5 relative (float32, same kernels, only the summation order of the final reductions differs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smile_hf import Mix
from smile_hf.backbones import SOURCE_HEAD_NAME, BackboneAdapter

from .test_backbone_families import TIMM_FAMILIES
from .test_export import assert_no_key_warnings, images, transformers_log
from .test_smile_loss import RTOL, make_trainer
from .testing_utils import IMAGE_SIZE, random_image_dataset, source_and_student

FAMILIES = ["dinov2_with_registers", "clip", "siglip", "beit", "levit_distilled", "swinv2", "mobilevit"]


def grid(tokens):
    """B x N x C patch tokens as a B x C x sqrt(N) x sqrt(N) map."""
    side = int(tokens.shape[1] ** 0.5)
    return tokens.transpose(1, 2).reshape(len(tokens), -1, side, side)


def features_by_hand(family, model, x):
    """(last feature map, pooled feature the head sees, the new head's parameters) read from the model's modules."""
    if family in TIMM_NAMES:
        timm = model.timm_model
        features = timm.forward_features(x)
        pooled = timm.forward_head(features, pre_logits=True)
        fmap = grid(features[:, timm.num_prefix_tokens :]) if features.dim() == 3 else features
        return fmap, pooled, list(timm.get_classifier().parameters())
    if family == "dinov2_with_registers":
        tokens = model.dinov2_with_registers(x).last_hidden_state
        patches = tokens[:, 1 + model.config.num_register_tokens :]
        return grid(patches), torch.cat([tokens[:, 0], patches.mean(1)], dim=1), list(model.classifier.parameters())
    if family in ("clip", "siglip"):
        tokens = model.vision_model(x).last_hidden_state
        patches = tokens[:, 1:] if family == "clip" else tokens  # SigLIP has no class token
        return grid(patches), patches.mean(1), list(model.classifier.parameters())
    if family == "levit_distilled":
        mean = model.levit(x).last_hidden_state
        pooled = torch.cat([model.classifier.batch_norm(mean.mean(1)), model.classifier_distill.batch_norm(mean.mean(1))], 1)
        heads = [model.classifier.linear, model.classifier_distill.linear]
        return grid(mean), pooled, [p for h in heads for p in h.parameters()]
    base = model.base_model(x)
    state = base.last_hidden_state
    fmap = state if state.dim() == 4 else grid(state[:, 1:] if family == "beit" else state)
    return fmap, base.pooler_output, list(model.classifier.parameters())


def smile_terms_by_hand(mix, y, logits, aux_logits, source_logits, feat_s, feat_t, head_params) -> dict:
    """The four SMILE terms of docs/methods.md from the student's outputs on the mixed images and the source model's on
    the unmixed ones."""
    lam, perm = mix.lam, mix.perm
    p_t = torch.softmax(source_logits, dim=-1)
    log_q = F.log_softmax(aux_logits, dim=-1)
    height, width = feat_s.shape[-2:]
    assert height * width >= 4, "the feature map must be at least 2x2 to tell it from the pooled vector"
    target = lam * feat_t + (1 - lam) * feat_t[perm]
    return {
        "main": lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm]),
        "aux": -((lam * p_t + (1 - lam) * p_t[perm]) * log_q).sum(dim=1).mean(),  # H is linear in q
        "reg": (target - feat_s).flatten().norm() / (height * width),
        "cls": 0.5 * sum(p.pow(2).sum() for p in head_params),
    }


TIMM_NAMES = {"timm_cnn", "timm_vit"}
ALL = FAMILIES + TIMM_FAMILIES


@pytest.mark.parametrize("family", ALL)
def test_smile_loss_equals_hand_computation(family, tmp_path, torch_device):
    source, student = source_and_student(family, num_source=7, num_target=3)
    trainer = make_trainer(student, source, tmp_path, method="smile")
    x = torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)).to(torch_device)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=torch_device)
    lam, perm = 0.7, torch.tensor([3, 0, 5, 1, 2, 4], device=torch_device)
    model = trainer.model.eval()

    output = trainer.loss_fn(model, x, y, Mix("mixup", lam, perm))

    with torch.no_grad():
        mixed = lam * x + (1 - lam) * x[perm]
        feat_s, pooled_s, head_params = features_by_hand(family, model, mixed)
        feat_t, _, _ = features_by_hand(family, source.eval(), x)
        hand = smile_terms_by_hand(
            Mix("mixup", lam, perm), y, model(pixel_values=mixed).logits,
            getattr(model, SOURCE_HEAD_NAME)(pooled_s), source(pixel_values=x).logits, feat_s, feat_t,
            head_params + list(getattr(model, SOURCE_HEAD_NAME).parameters()),
        )  # fmt: skip
        expected = hand["main"] + 0.1 * hand["aux"] + 0.01 * hand["reg"] + 1e-4 * hand["cls"]

    torch.testing.assert_close(output.loss.detach(), expected, rtol=RTOL, atol=0)
    # L_reg is the norm of a difference of two maps that can nearly cancel (4.7e-4 for BEiT, against 0.3 for the
    # maps themselves): its error is bounded relative to the maps, not to itself. The two ways of writing the mix
    # (`lerp` in the library, lam * a + (1 - lam) * b here) differ by about 1 ulp per element.
    map_scale = {"reg": (feat_s.norm() / feat_s[0, 0].numel()).item()}
    for name, value in hand.items():
        assert output.terms[name][1].item() == pytest.approx(value.item(), rel=RTOL, abs=RTOL * map_scale.get(name, 0))


def stage_states_by_hand(family, model, x, num_layers):
    """The last `num_layers` hidden states the model returns, special tokens dropped (DELTA's distance sums over
    positions, so the order of the positions does not matter)."""
    if family in TIMM_NAMES:
        _, states = model.timm_model.forward_intermediates(x, intermediates_only=False)
        return [s.flatten(2) for s in states[-num_layers:]]
    special = {"clip": 1, "beit": 1}.get(family, 0)
    if family == "dinov2_with_registers":
        special = 1 + model.config.num_register_tokens
    states = model(pixel_values=x, output_hidden_states=True).hidden_states[-num_layers:]
    return [s[:, special:] if s.dim() == 3 else s for s in states]


@pytest.mark.parametrize("family", ALL)
def test_delta_regulariser_equals_hand_computation(family, tmp_path, torch_device):
    """DELTA without attention (a_c = 1/C), the SMILE reference's: L = CE + 0.001 * sum_{b,c} ||F_t[b,c] - F_s[b,c]||^2
    / (C * H * W) on the last stage's output, i.e. 0.001 * ||F_t - F_s||^2 / (the size of one image's map)."""
    source, student = source_and_student(family, num_source=7, num_target=3)
    trainer = make_trainer(student, source, tmp_path, method="delta", delta_attention=False)
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(2)).to(torch_device)
    y = torch.tensor([0, 1, 2, 0], device=torch_device)
    model = trainer.model.eval()
    with torch.no_grad():  # move the student away from the teacher so that the distance is not zero
        for _, p in BackboneAdapter(model).backbone_named_parameters(model):
            p.add_(0.01 * torch.randn_like(p))

    output = trainer.loss_fn(model, x, y)

    with torch.no_grad():
        (student_state,) = stage_states_by_hand(family, model, x, 1)
        (teacher_state,) = stage_states_by_hand(family, source.eval(), x, 1)
        omega = (student_state - teacher_state).pow(2).sum() / student_state[0].numel()  # any layout: C x positions
        expected = F.cross_entropy(model(pixel_values=x).logits, y) + 0.001 * omega
    assert omega > 0
    torch.testing.assert_close(output.loss.detach(), expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize("family", ALL)
def test_export_loads_in_pipeline_with_the_students_logits(family, tmp_path, torch_device):
    from transformers import ViTImageProcessor, pipeline

    source, student = source_and_student(family, num_source=7, num_target=3)
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    trainer = make_trainer(
        student, source, tmp_path / "run", method="smile", max_steps=1, per_device_train_batch_size=2,
        disable_tqdm=True, final_finetune_fraction=0.0,
    )  # fmt: skip
    trainer.train_dataset, trainer.processing_class = random_image_dataset(2), processor
    trainer.train()
    trainer.save_model(str(tmp_path / "export"))
    with transformers_log() as log:
        classifier = pipeline("image-classification", model=str(tmp_path / "export"), device=torch_device)
    assert_no_key_warnings(log.getvalue())
    pictures = images(2)
    with torch.no_grad():
        pixel_values = processor(pictures, return_tensors="pt")["pixel_values"].to(torch_device)
        probs = student.eval()(pixel_values).logits.softmax(-1)
    for picture, expected in zip(pictures, probs):
        scores = {p["label"]: p["score"] for p in classifier(picture, top_k=3)}
        labels = student.config.id2label
        assert scores == pytest.approx({labels[i]: expected[i].item() for i in range(3)}, abs=1e-5)
