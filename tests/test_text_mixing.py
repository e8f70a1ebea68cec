"""The pieces of SMILE for text against hand computations: the embedding mix, the union of the attention masks, the
token-normalised L_reg and the pooled position of decoder-only classifiers."""

from __future__ import annotations

import math

import pytest
import torch

from smile_hf.backbones import BackboneAdapter
from smile_hf.mixing import Mix
from smile_hf.text import (
    kept_token_count,
    last_kept_position,
    mix_attention_masks,
    mix_embeddings,
    token_mixup_distance,
)

from .text_testing import tiny_text_model, token_batch

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
PERM = torch.tensor([1, 2, 0])


def test_mask_union_by_hand():
    union = mix_attention_masks(MASK, Mix("mixup", 0.7, PERM))
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # row i: MASK[i] or MASK[PERM[i]]
    assert torch.equal(union, expected)
    assert torch.equal(mix_attention_masks(MASK, None), MASK)


def test_embedding_mix_by_hand():
    embeddings = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    lam = 0.7
    mixed = mix_embeddings(embeddings, Mix("mixup", lam, PERM))
    for i, j in enumerate(PERM.tolist()):  # lerp vs the explicit sum: a few float32 ulps
        torch.testing.assert_close(mixed[i], lam * embeddings[i] + (1 - lam) * embeddings[j], rtol=1e-6, atol=1e-6)


def test_token_normalised_feature_distance_by_hand():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(3, 5, 4, generator=generator), torch.randn(3, 5, 4, generator=generator)
    lam, mix = 0.8, Mix("mixup", 0.8, PERM)
    union = mix_attention_masks(MASK, mix)
    squares, kept = 0.0, 0
    for b in range(3):  # the norm over the kept tokens, one scalar at a time
        for t in range(5):
            if union[b, t]:
                kept += 1
                for d in range(4):
                    target = lam * teacher[b, t, d].item() + (1 - lam) * teacher[PERM[b], t, d].item()
                    squares += (target - student[b, t, d].item()) ** 2
    expected = math.sqrt(squares) / (kept / 3)  # divided by the mean number of kept tokens per sequence
    value = token_mixup_distance(student, teacher, union, mix)
    assert kept == 13 and math.isclose(kept_token_count(union).item(), 13 / 3, rel_tol=1e-6)
    assert math.isclose(value.item(), expected, rel_tol=1e-5)  # float32 vs float64 sums
    # positions outside the union mask do not count: changing them changes nothing
    student[0, 3:] += 100.0
    assert math.isclose(token_mixup_distance(student, teacher, union, mix).item(), expected, rel_tol=1e-5)


def test_full_masks_reduce_to_the_image_normalisation():
    """Every token kept: N = T, the analogue of H * W (a norm over the batch divided by the positions per sample)."""
    generator = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 6, 3, generator=generator), torch.randn(2, 6, 3, generator=generator)
    value = token_mixup_distance(student, teacher, torch.ones(2, 6), None)
    assert math.isclose(value.item(), torch.linalg.vector_norm(teacher - student).item() / 6, rel_tol=1e-6)


def test_last_kept_position_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    assert last_kept_position(right).tolist() == [2, 0, 3]
    assert last_kept_position(left).tolist() == [3, 3, 3]


@pytest.mark.parametrize("family", ["bert", "electra", "albert"])
def test_the_token_types_of_sentence_pairs_are_mixed_with_the_words(family):
    """The sum the embedding LayerNorm receives (word + type + position) for a mixed batch equals the mix of the sums
    of the two unmixed samples, whose segment boundaries differ; the unmixed pass is the model's own."""
    model = tiny_text_model(family, num_labels=3).eval()
    adapter = BackboneAdapter(model)
    batch = token_batch([6, 6, 6], seed=3)
    batch["token_type_ids"] = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1]])
    norm = model.get_submodule(adapter.spec.trunk).embeddings.LayerNorm
    seen = []
    handle = norm.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    lam, perm = 0.7, torch.tensor([1, 2, 0])
    with torch.no_grad():
        adapter.forward(model, batch)
        adapter.forward(model, batch, mix=Mix("mixup", lam, perm))
        own = model(**batch).logits
    handle.remove()
    unmixed, mixed, _ = seen
    torch.testing.assert_close(mixed, lam * unmixed + (1 - lam) * unmixed[perm], rtol=1e-5, atol=1e-6)  # float32 sums
    torch.testing.assert_close(adapter.forward(model, batch).logits, own, rtol=0, atol=0)
