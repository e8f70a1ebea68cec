"""Text classifiers (`*ForSequenceClassification`) in SmileTrainer: every supported family, tiny configs. The
adapter's forward pass against the model's own, SMILE's terms against a hand computation with the mix done by
hand, and a few training steps through the Trainer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from smile_hf import BackboneAdapter, SmileTrainingArguments
from smile_hf.backbones import TextBackboneAdapter, build_source_head_copy
from smile_hf.loss import TransferLoss
from smile_hf.mixing import Mix
from smile_hf.modeling import attach_source_head
from smile_hf.teacher import EmaTeacher

from .text_testing import (
    DECODERS,
    TEXT_FAMILIES,
    pad_id,
    text_source_and_student,
    tiny_text_model,
    token_batch,
    token_trainer,
)

PADDING_POSITIONS = ("roberta", "xlm-roberta", "mpnet")
LENGTHS = [5, 3, 7, 2]
LABELS = torch.tensor([0, 1, 2, 1])
PERM = torch.tensor([2, 0, 3, 1])
TOL = dict(rtol=1e-5, atol=1e-6)  # the same float32 operations in another order at most


def family_cases():
    return [(f, False) for f in TEXT_FAMILIES] + [(f, True) for f in DECODERS]


@pytest.mark.parametrize("family,left", family_cases())
def test_forward_matches_the_model(family, left):
    """Unmixed, the adapter's pass on `inputs_embeds` gives the model's own logits on `input_ids` (decoders: the
    last non-padding token, right or left padding), and the head applied to the pooled feature gives them too."""
    model = tiny_text_model(family, 3).eval()
    adapter = BackboneAdapter(model)
    assert isinstance(adapter, TextBackboneAdapter)
    batch = token_batch(LENGTHS, pad=pad_id(model), left=left)
    with torch.no_grad():
        expected = model(**batch).logits
        out = adapter.forward(model, batch)
    torch.testing.assert_close(out.logits, expected, **TOL)
    torch.testing.assert_close(adapter.head(model)(out.pooled), expected, **TOL)
    assert out.feature_map.shape == (4, 7, model.config.hidden_size)
    assert torch.equal(out.attention_mask, batch["attention_mask"])


def hand_terms(family, student, source, batch, lam):
    """L_main and L_reg computed without the adapter: the mix, the union mask and the positions by hand, the models
    run through their base model and head."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    embeddings = student.get_input_embeddings()(ids)
    mixed = lam * embeddings + (1 - lam) * embeddings[PERM]
    union = ((mask + mask[PERM]) > 0).long()
    kwargs = {"attention_mask": union}
    if family in PADDING_POSITIONS:  # right padding: kept tokens at padding_idx + 1, 2, ...; padding at padding_idx
        width, pad = ids.shape[1], student.config.pad_token_id
        kwargs["position_ids"] = torch.where(union.bool(), torch.arange(width) + pad + 1, torch.tensor(pad))
    student_states = student.base_model(inputs_embeds=mixed, **kwargs).last_hidden_state
    teacher_states = source.base_model(**batch).last_hidden_state
    if family in DECODERS:
        last = torch.tensor([max(t for t in range(ids.shape[1]) if union[b, t]) for b in range(len(ids))])
        logits = student.score(student_states[torch.arange(len(ids)), last])
    else:
        logits = student(inputs_embeds=mixed, **kwargs).logits
    main = lam * F.cross_entropy(logits, LABELS) + (1 - lam) * F.cross_entropy(logits, LABELS[PERM])
    target = lam * teacher_states + (1 - lam) * teacher_states[PERM]
    kept = union.sum().item() / len(ids)
    reg = torch.sqrt(((target - student_states) ** 2 * union[..., None]).sum()) / kept
    return main, reg


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_smile_terms_match_a_hand_computation(family):
    source, student = text_source_and_student(family)
    source.eval(), student.eval()  # no dropout: the two computations see the same network
    adapter = BackboneAdapter(student)
    attach_source_head(student, build_source_head_copy(adapter, source))
    loss_fn = TransferLoss("smile", adapter, EmaTeacher(copy.deepcopy(source), adapter))
    batch, lam = token_batch(LENGTHS, pad=pad_id(student)), 0.7
    out = loss_fn(student, batch, LABELS, Mix("mixup", lam, PERM))
    with torch.no_grad():
        main, reg = hand_terms(family, student, source, batch, lam)
        teacher_probs = torch.softmax(source(**batch).logits, dim=-1)
        target = lam * teacher_probs + (1 - lam) * teacher_probs[PERM]
        aux = -(target * F.log_softmax(student.smile_source_head(out.student.pooled), dim=-1)).sum(-1).mean()
    torch.testing.assert_close(out.terms["main"][1], main, **TOL)
    torch.testing.assert_close(out.terms["reg"][1], reg, **TOL)
    torch.testing.assert_close(out.terms["aux"][1], aux, **TOL)
    assert math.isfinite(out.loss.item())


def train_text(tmp_path, student, source, method="smile", steps=2, **kwargs):
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", method=method, max_steps=steps,
        per_device_train_batch_size=4, logging_steps=1, learning_rate=1e-2, seed=0, **kwargs,
    )  # fmt: skip
    trainer = token_trainer(student, source, args)
    trainer.train()
    return trainer


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_smile_trains_each_family(family, tmp_path):
    source, student = text_source_and_student(family)
    embeddings = student.get_input_embeddings().weight.detach().clone()
    head = BackboneAdapter(student).head(student).weight.detach().clone()
    trainer = train_text(tmp_path, student, source)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for log in logs:
        assert {"loss_main", "loss_aux", "loss_reg", "loss_cls"} <= set(log)
        assert all(math.isfinite(log[k]) for k in ("loss", "loss_main", "loss_aux", "loss_reg", "loss_cls"))
    assert not torch.equal(student.get_input_embeddings().weight, embeddings)  # gradients reach the embeddings
    assert not torch.equal(trainer.adapter.head(student).weight, head)
