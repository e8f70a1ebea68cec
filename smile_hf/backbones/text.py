# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The backbone adapter of text classifiers (`AutoModelForSequenceClassification`): the last hidden states, the pooled
feature and the classifier head from one forward pass, with the input mixed in embedding space.

The batch is a mapping with `input_ids` and `attention_mask` (what `DataCollatorWithPadding` gives). The adapter looks
up the word embeddings itself (`model.get_input_embeddings()`), mixes them, and passes them to the model as
`inputs_embeds` with the union of the pair's attention masks ([`smile_hf.text`]); the model adds its position
embeddings as usual, and the token-type embeddings of sentence pairs are mixed with the word embeddings. Families
whose positions are counted from the padding (RoBERTa, XLM-RoBERTa, MPNet) get the `position_ids` they would compute
from `input_ids`, from the mask.

Decoder-only classifiers (GPT-2, Llama, Qwen2, Qwen3) apply their head to every token and keep the logits of the last
non-padding one, which transformers finds from `input_ids` only (with `inputs_embeds` it takes the last position,
wrong under right padding). Here the pooled token is the last position the attention mask keeps, for the logits, the
pooled feature and the source head alike, whatever the padding side.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..mixing import Mix, mix_tensor
from ..text import TEXT_INPUT_NAMES, last_kept_position, mix_attention_masks, mix_embeddings
from .adapter import BackboneAdapter, ForwardOutput, register_adapter_class
from .capture import Capture, capturing
from .spec import BACKBONES, BackboneSpec, UnsupportedBackboneError, unwrap_model
from .structure import find_heads, find_trunk


@dataclass(frozen=True)
class TextFamily:
    """How one text family is run.

    Args:
        last_token (`bool`): a decoder-only classifier pooling the last non-padding token.
        padding_positions (`bool`): positions are counted from the padding index (RoBERTa's
            `create_position_ids_from_input_ids`), so `position_ids` are passed.
    """

    last_token: bool = False
    padding_positions: bool = False


TEXT_FAMILIES: dict[str, TextFamily] = {
    "bert": TextFamily(),
    "roberta": TextFamily(padding_positions=True),
    "xlm-roberta": TextFamily(padding_positions=True),
    "mpnet": TextFamily(padding_positions=True),
    "distilbert": TextFamily(),
    "deberta-v2": TextFamily(),
    "electra": TextFamily(),
    "albert": TextFamily(),
    "modernbert": TextFamily(),
    "gpt2": TextFamily(last_token=True),
    "llama": TextFamily(last_token=True),
    "qwen2": TextFamily(last_token=True),
    "qwen3": TextFamily(last_token=True),
}
"""The text families trained and tested, by `config.model_type`."""


def is_text_classifier(model: nn.Module) -> bool:
    """Whether `model` (possibly wrapped) is a `transformers` `*ForSequenceClassification`."""
    return type(unwrap_model(model)).__name__.endswith("ForSequenceClassification")


def saved_text_classifier(model_dir: str | os.PathLike) -> str | None:
    """The `*ForSequenceClassification` class a saved model folder holds (its `config.json`'s `architectures`), or
    `None` for any other model (an image classifier) or a folder without a readable config."""
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            architectures = json.load(f).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return next((a for a in architectures if str(a).endswith("ForSequenceClassification")), None)


def find_layers(model: nn.Module, trunk: str) -> str | None:
    """The dotted path of the trunk's `nn.ModuleList` of `config.num_hidden_layers` layers (None when the layers are
    shared across depth, as ALBERT's are, or not in one list)."""
    depth = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.get_submodule(trunk).named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return f"{trunk}.{name}"
    return None


class TextBackboneAdapter(BackboneAdapter):
    """[`BackboneAdapter`] of a text classifier (see the module docstring). `BackboneAdapter(model)` returns one for
    any `*ForSequenceClassification` model.

    The "feature map" of a text model is its B x T x D last hidden state (`ForwardOutput.feature_map`), with the
    attention mask of the input it was computed on (`ForwardOutput.attention_mask`); the stages are the
    transformer layers.

    Args:
        model (`PreTrainedModel`): a `*ForSequenceClassification` of one of the [`TEXT_FAMILIES`].
    """

    def __init__(self, model: nn.Module):
        model = unwrap_model(model)
        self.model_type = getattr(model.config, "model_type", None)
        self.family = TEXT_FAMILIES.get(self.model_type)
        if self.family is None:
            raise UnsupportedBackboneError(
                f"smile_hf does not train text model type '{self.model_type}' ({type(model).__name__}): the supported "
                f"text families are {', '.join(TEXT_FAMILIES)}."
            )
        given = BACKBONES.get(self.model_type, BackboneSpec())
        trunk = given.trunk or find_trunk(model)
        self.spec = BackboneSpec(
            head=given.head or find_heads(model, trunk),
            stages=given.stages or find_layers(model, trunk),
            num_special_tokens=0,
            tokens=True,
            trunk=trunk,
        )
        self.head(model)  # fail early if the head is not where the spec says
        self._parameters = set(inspect.signature(model.forward).parameters)

    # ---- inputs -----------------------------------------------------------------------------------------------

    def model_inputs(self, batch: Mapping) -> dict[str, torch.Tensor]:
        """The entries of a collated batch the model is run on (`input_ids`, `attention_mask`, `token_type_ids`)."""
        if "input_ids" not in batch:
            raise ValueError(
                f"A batch for the text model '{self.model_type}' needs `input_ids` (it has {sorted(batch)}): tokenize "
                "the texts and collate them with `DataCollatorWithPadding(tokenizer)`."
            )
        return {name: batch[name] for name in TEXT_INPUT_NAMES if name in batch and name in self._parameters}

    def model_kwargs(self, inputs: Mapping) -> dict[str, torch.Tensor]:
        """The keyword arguments of a plain call of the model on `inputs`."""
        return dict(inputs)

    def batch_size(self, inputs: Mapping) -> int:
        return inputs["input_ids"].shape[0]

    def check_method(self, regularizer, mixing: str | None) -> None:
        """Refuse CutMix (it pastes a box of pixels: token sequences have no such region), and hidden-state mixing or
        a method reading the layers' outputs (DELTA) for a family without one module per layer."""
        if mixing == "cutmix":
            raise ValueError(
                "CutMix has no analogue for text (it pastes an image region): use mixing='mixup' (in embedding "
                "space) or 'manifold_mixup' (hidden states) with a text model."
            )
        if mixing == "manifold_mixup" or regularizer.needs_hidden_states:
            self._layers_path()

    def _layers_path(self) -> str:
        if self.spec.stages is None:
            raise UnsupportedBackboneError(
                f"The text model type '{self.model_type}' has no list of one module per layer (ALBERT shares its "
                "layers across depth): hidden-state mixing (manifold_mixup) and DELTA need one. Use mixing='mixup' "
                "and another method."
            )
        return self.spec.stages

    def stages(self, model: nn.Module) -> nn.ModuleList:
        """The transformer layers of `model`, in order."""
        return unwrap_model(model).get_submodule(self._layers_path())

    def position_ids(self, model: nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
        """RoBERTa's positions, `cumsum(mask) * mask + padding_idx`, from the mask (what the model computes from
        `input_ids` when the padding is what the mask drops)."""
        padding_idx = unwrap_model(model).config.pad_token_id
        mask = attention_mask.ne(0).long()
        return torch.cumsum(mask, dim=1) * mask + padding_idx

    # ---- forward ----------------------------------------------------------------------------------------------

    def embed(self, model: nn.Module, inputs: Mapping, mix: Mix | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The (mixed) word embeddings and the other keyword arguments of the model (the union attention mask...)."""
        inner = unwrap_model(model)
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeddings = inner.get_input_embeddings()(input_ids)
        kwargs = {name: value for name, value in inputs.items() if name not in ("input_ids", "attention_mask")}
        mixes_a_stage = mix is not None and mix.strategy == "manifold_mixup" and mix.stage > 0
        if mix is not None and not mixes_a_stage:
            embeddings = self.mix_input_embeddings(inner, embeddings, kwargs, mix)
        kwargs["attention_mask"] = mix_attention_masks(attention_mask, mix)
        if self.family.padding_positions:
            kwargs["position_ids"] = self.position_ids(inner, kwargs["attention_mask"])
        return embeddings, kwargs

    def mix_input_embeddings(
        self, model: nn.Module, embeddings: torch.Tensor, kwargs: dict[str, torch.Tensor], mix: Mix
    ) -> torch.Tensor:
        """The mixed word embeddings; with `token_type_ids` (sentence pairs) and a type-embedding table, the type
        embeddings are mixed with them: `mix(word + type(tt)) - type(0)` is passed with `token_type_ids` all 0, so that
        the sum the model forms is `lambda (word_i + type_i) + (1 - lambda) (word_j + type_j)`, not the first
        sample's types alone (`kwargs` is updated)."""
        types, table = kwargs.get("token_type_ids"), self.type_embeddings(model)
        if types is None or table is None:
            return mix_embeddings(embeddings, mix)
        zeros = torch.zeros_like(types)
        kwargs["token_type_ids"] = zeros
        return mix_embeddings(embeddings + table(types), mix) - table(zeros)

    def type_embeddings(self, model: nn.Module) -> nn.Module | None:
        """The token-type embedding table the model adds to the word embeddings (BERT, ELECTRA, ALBERT, RoBERTa...;
        None for the families without one)."""
        embeddings = getattr(model.get_submodule(self.spec.trunk), "embeddings", None)
        table = getattr(embeddings, "token_type_embeddings", None)
        return table if isinstance(table, nn.Embedding) else None

    def forward(
        self,
        model: nn.Module,
        inputs: Mapping,
        *,
        source_head: nn.Module | None = None,
        output_hidden_states: bool = False,
        mix: Mix | None = None,
    ) -> ForwardOutput:
        """Run `model` once on the (mixed) token embeddings and return its logits, last hidden states, pooled feature
        (and more on request).

        Args:
            model: the classifier to run, possibly wrapped (DDP, peft); hooks go on the unwrapped module.
            inputs: `input_ids`, `attention_mask` (optional: all ones) and `token_type_ids` (optional), unmixed.
            source_head: a module applied to the pooled feature inside the forward pass (so that DDP sees it).
            output_hidden_states: also return every layer's output (B x T x D, `hidden_maps`).
            mix: mix the batch: the word embeddings (mixup, manifold mixup at stage 0) or the output of layer k - 1
                (manifold mixup at stage k > 0); the attention mask is the union of each pair's.
        """
        inner = unwrap_model(model)
        mixes_a_stage = mix is not None and mix.strategy == "manifold_mixup" and mix.stage > 0
        stages = self.stages(inner) if output_hidden_states or mixes_a_stage else ()
        embeddings, kwargs = self.embed(inner, inputs, mix)
        heads = self.classifiers(inner)
        capture = Capture(
            trunk=inner.get_submodule(self.spec.trunk),
            heads=heads,
            shared_head_input=True,
            source_head=source_head,
            stages=stages if output_hidden_states else (),
            mix_stage=stages[mix.stage - 1] if mixes_a_stage else None,
            mix_fn=(lambda hidden: mix_tensor(hidden, mix)) if mixes_a_stage else None,
            record=heads if self.family.last_token else (),
        )
        with capturing(capture):
            outputs = model(inputs_embeds=embeddings, **kwargs)
        logits, pooled, source_logits = outputs["logits"], capture.pooled, capture.source_logits
        if self.family.last_token:  # the head ran on every token: keep the last one the mask keeps
            rows = torch.arange(embeddings.shape[0], device=embeddings.device)
            last = last_kept_position(kwargs["attention_mask"])
            logits, pooled = capture.records[-1][2][rows, last], pooled[rows, last]
            source_logits = source_logits[rows, last] if source_logits is not None else None
        return ForwardOutput(
            logits=logits,
            feature_map=capture.last,
            pooled=pooled,
            source_logits=source_logits,
            hidden_maps=list(capture.stage_outputs),
            attention_mask=kwargs["attention_mask"],
        )


register_adapter_class(is_text_classifier, TextBackboneAdapter)
