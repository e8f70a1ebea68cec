# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The pieces of SMILE that differ for text: token ids cannot be mixed, their embeddings can (embedding mixup, Guo et
al. 2019, arXiv 1905.08941), and a sequence has only the positions its attention mask keeps.

With `e = word_embeddings(input_ids)` (B x T x D; plus the token-type embeddings of sentence pairs:
[`smile_hf.backbones.text.TextBackboneAdapter.mix_input_embeddings`]), `m` the 0/1 attention masks (B x T) and a mix
(lambda, perm):

    inputs_embeds  = lambda * e + (1 - lambda) * e[perm]         (the model adds position embeddings)
    attention_mask = m OR m[perm]                                 (the union of the pair's masks)

and the sample-to-feature term on the last hidden states (F_s of the mixed input, F_t of the two originals):

    L_reg = || (lambda * F_t + (1 - lambda) * F_t[perm] - F_s) * m_mix ||_2 / N,     N = sum(m_mix) / B

one Frobenius norm over the B x T x D states, the positions outside the union mask left out, divided by the mean
number of kept tokens per sequence: the analogue of the image term's H * W (every position of a map is kept), which it
equals when every sequence keeps all its T positions.
"""

from __future__ import annotations

import torch

from .mixing import Mix, mix_tensor

TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
"""The entries of a collated text batch a text classifier is run on (others, such as `labels`, are left out)."""


def mix_attention_masks(attention_mask: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """The union of the masks of each mixed pair: `m OR m[perm]` (in the mask's dtype); `m` itself without a mix."""
    if mix is None:
        return attention_mask
    return torch.maximum(attention_mask, attention_mask.index_select(0, mix.perm))


def mix_embeddings(embeddings: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """lambda * e + (1 - lambda) * e[perm] of B x T x D embeddings (`e` itself without a mix)."""
    return mix_tensor(embeddings, mix)


def kept_token_count(attention_mask: torch.Tensor) -> torch.Tensor:
    """N: the mean number of positions per sequence that `attention_mask` keeps (float32, at least 1)."""
    return attention_mask.float().sum().div(attention_mask.shape[0]).clamp(min=1.0)


def token_mixup_distance(
    student_states: torch.Tensor, teacher_states: torch.Tensor, attention_mask: torch.Tensor, mix: Mix | None
) -> torch.Tensor:
    """L_reg for text (module docstring): the Frobenius norm of `mix(F_t) - F_s` over the positions `attention_mask`
    keeps (the union mask of the mixed input), divided by the mean number of kept positions per sequence.

    Args:
        student_states (`torch.Tensor`): B x T x D last hidden states of the student on the mixed input.
        teacher_states (`torch.Tensor`): B x T x D last hidden states of the teacher on the unmixed input (detached).
        attention_mask (`torch.Tensor`): B x T mask of the student's input (the union of each pair's masks).
        mix (`Mix`, *optional*): the mix of the batch.

    Returns:
        `torch.Tensor`: a scalar.
    """
    target = mix_tensor(teacher_states.detach(), mix).to(student_states.dtype)
    keep = attention_mask.unsqueeze(-1).to(student_states.dtype)
    return torch.linalg.vector_norm((target - student_states) * keep) / kept_token_count(attention_mask)


def last_kept_position(attention_mask: torch.Tensor) -> torch.Tensor:
    """The index of the last position each row of `attention_mask` keeps (right or left padding alike): the token a
    decoder-only classifier pools. The formula of transformers' `*ForSequenceClassification` with `input_ids`,
    `(arange(T) * (input_ids != pad)).argmax(-1)`, with the mask in place of the non-padding test."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.ne(0).long()).argmax(-1)


def has_classification_head(source_model) -> bool:
    """Whether the source model's head was trained (its checkpoint is a `*ForSequenceClassification`, by
    `config.architectures`), rather than initialised at loading (a pre-training checkpoint: `BertForMaskedLM`,
    `BertModel`...). A model built in memory (no `architectures`) is taken as it is: with its head."""
    architectures = getattr(getattr(source_model, "config", None), "architectures", None)
    return not architectures or any(name.endswith("ForSequenceClassification") for name in architectures)


def masked_attention_weighted_distance(
    student_states: torch.Tensor, teacher_states: torch.Tensor, attention_mask: torch.Tensor, attention: torch.Tensor
) -> torch.Tensor:
    """DELTA's distance for text: sum_b sum_c a_c * sum over the n_b tokens sequence b keeps of
    (F_s - F_t)[b, t, c]^2 / n_b (float32; the teacher's states detached), the analogue of the image form's
    sum_{b,c} a_c ||dF[b,c]||^2 / (H * W).

    Args:
        student_states (`torch.Tensor`): B x T x D states of the student.
        teacher_states (`torch.Tensor`): B x T x D states of the teacher on the same input.
        attention_mask (`torch.Tensor`): B x T mask of that input.
        attention (`torch.Tensor`): the D channel weights a_c.

    Returns:
        `torch.Tensor`: a scalar.
    """
    keep = attention_mask.float()
    diff = (student_states.float() - teacher_states.detach().float()) * keep.unsqueeze(-1)
    per_channel = diff.pow(2).sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp(min=1.0)  # B x D
    return (per_channel * attention.to(per_channel.device)).sum()
