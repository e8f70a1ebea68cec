# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Backbone adapter: the last feature map, the pooled feature and the classifier head of any supported
`AutoModelForImageClassification`, all from one forward pass of the model.

The adapter does not re-implement any architecture. It runs the model's own forward and reads, with hooks,
- the output of the base model (`model.base_model`), whose `last_hidden_state` is the last feature map
  (B x C x H x W for CNNs; for ViT-like models a token sequence, reshaped to B x C x h x w with the class and
  distillation tokens excluded),
- the input of the final `nn.Linear` classifier, which is the pooled feature the head sees.
A model family is described by a [`BackboneSpec`]; new families are added with [`register_backbone`].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .mixing import Mix, mix_inputs, mix_tensor

SOURCE_HEAD_NAME = "smile_source_head"
"""Attribute under which a trainable copy of the source (pre-trained) head is attached to the student."""


class UnsupportedBackboneError(ValueError):
    """Raised for a model whose feature map, pooled feature or classifier cannot be found."""


@dataclass(frozen=True)
class BackboneSpec:
    """Where the pieces of one model family live.

    Args:
        head (`str`): dotted path, from the `...ForImageClassification` model, of the final `nn.Linear` classifier.
        stages (`str`): dotted path of the `nn.ModuleList` of backbone stages (used by manifold mixup); alternatives
            for different `transformers` versions are separated by `|`.
        num_special_tokens (`int`): tokens before the patch tokens in `last_hidden_state` (ViT: 1, DeiT: 2);
            only for token layouts.
        tokens (`bool`): whether `last_hidden_state` and `hidden_states` are token sequences (B x N x C).
        hidden_states_key (`str`): output field holding the per-stage states as maps or tokens.
    """

    head: str
    stages: str
    num_special_tokens: int = 0
    tokens: bool = False
    hidden_states_key: str = "hidden_states"


BACKBONES: dict[str, BackboneSpec] = {
    "resnet": BackboneSpec(head="classifier.1", stages="resnet.encoder.stages"),
    "regnet": BackboneSpec(head="classifier.1", stages="regnet.encoder.stages"),
    "convnext": BackboneSpec(head="classifier", stages="convnext.encoder.stages"),
    "convnextv2": BackboneSpec(head="classifier", stages="convnextv2.encoder.stages"),
    "mobilenet_v2": BackboneSpec(head="classifier", stages="mobilenet_v2.layer"),
    "efficientnet": BackboneSpec(head="classifier", stages="efficientnet.encoder.blocks"),
    "vit": BackboneSpec(head="classifier", stages="vit.layers|vit.encoder.layer", num_special_tokens=1, tokens=True),
    "deit": BackboneSpec(head="classifier", stages="deit.layers|deit.encoder.layer", num_special_tokens=2, tokens=True),
    "swin": BackboneSpec(
        head="classifier", stages="swin.encoder.layers", tokens=True, hidden_states_key="reshaped_hidden_states"
    ),
}


def register_backbone(model_type: str, spec: BackboneSpec) -> None:
    """Teach the adapter a new model family (`config.model_type`), e.g. for a custom model."""
    BACKBONES[model_type] = spec


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP / DataParallel / `torch.compile` / peft `PeftModel` wrappers (for a `PeftModel`, the
    `transformers` model with the adapter layers injected)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None and callable(getattr(type(model), "get_base_model", None)):  # peft's PeftModel
            inner = model.get_base_model()
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@dataclass
class ForwardOutput:
    """What one forward pass of a classifier exposes.

    Attributes:
        logits: B x K logits of the model's own head.
        feature_map: B x C x H x W last feature map before pooling.
        pooled: B x D feature the head is applied to.
        source_logits: logits of the attached source head on `pooled`, when asked for.
        hidden_maps: per-stage feature maps (B x C_j x H_j x W_j, stage order), when asked for.
    """

    logits: torch.Tensor
    feature_map: torch.Tensor
    pooled: torch.Tensor
    source_logits: torch.Tensor | None = None
    hidden_maps: list[torch.Tensor] = field(default_factory=list)


def tokens_to_map(tokens: torch.Tensor, num_special_tokens: int, image_hw: tuple[int, int]) -> torch.Tensor:
    """Reshape B x (S + N) x C tokens into a B x C x h x w map, dropping the S special tokens.

    The grid h x w is the one with N cells and the aspect ratio of the input image.
    """
    patches = tokens[:, num_special_tokens:, :]
    batch, num_patches, channels = patches.shape
    height = max(1, round(math.sqrt(num_patches * image_hw[0] / image_hw[1])))
    width = num_patches // height
    if height * width != num_patches:
        raise ValueError(f"Cannot arrange {num_patches} patch tokens in a grid for an input of size {image_hw}.")
    return patches.transpose(1, 2).reshape(batch, channels, height, width)


class BackboneAdapter:
    """Feature map, pooled feature and classifier head of a model family (see [`BackboneSpec`]).

    One adapter serves every model of the family (student and teacher alike): each method takes the model.

    Args:
        model (`PreTrainedModel`): an image classifier whose `config.model_type` is in [`BACKBONES`].
    """

    def __init__(self, model: nn.Module):
        model = unwrap_model(model)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in BACKBONES:
            raise UnsupportedBackboneError(
                f"smile_hf does not know where the features of model type '{model_type}' "
                f"({type(model).__name__}) are. Supported: {', '.join(sorted(BACKBONES))}. To add it, call "
                "smile_hf.register_backbone('<model_type>', BackboneSpec(head='<path of the final nn.Linear>', "
                "stages='<path of the ModuleList of stages>', ...)) before building the trainer."
            )
        self.model_type = model_type
        self.spec = BACKBONES[model_type]
        self.head(model)  # fail early if the head is not where the spec says
        self.stages(model)

    def _module(self, model: nn.Module, paths: str, what: str) -> nn.Module:
        for path in paths.split("|"):
            try:
                return unwrap_model(model).get_submodule(path)
            except AttributeError:
                continue
        raise UnsupportedBackboneError(
            f"The {what} of model type '{self.model_type}' was expected at '{paths}' but "
            f"{type(unwrap_model(model)).__name__} has no such submodule; fix its BackboneSpec."
        )

    def head(self, model: nn.Module) -> nn.Linear:
        """The final linear classifier of `model`."""
        head = self._module(model, self.spec.head, "classifier head")
        trained_copies = getattr(head, "modules_to_save", None)  # peft `modules_to_save`: the active adapter's copy
        if isinstance(trained_copies, nn.ModuleDict) and getattr(head, "active_adapters", None):
            head = trained_copies[head.active_adapters[0]]
        if not isinstance(head, nn.Linear):
            raise UnsupportedBackboneError(
                f"The classifier of '{self.model_type}' at '{self.spec.head}' is a {type(head).__name__}, not an "
                "nn.Linear (a model loaded with num_labels=0 has no head)."
            )
        return head

    def stages(self, model: nn.Module) -> nn.ModuleList:
        """The backbone stages of `model`, in order."""
        return self._module(model, self.spec.stages, "list of stages")

    def backbone_named_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters of the base model (everything but the classifier and attached heads)."""
        base = unwrap_model(model).base_model
        yield from base.named_parameters()

    def backbone_named_buffers(self, model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """Buffers of the base model (e.g. BatchNorm running statistics)."""
        yield from unwrap_model(model).base_model.named_buffers()

    def to_map(self, state: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """A stage output as a B x C x H x W map."""
        if self.spec.tokens and state.dim() == 3:
            return tokens_to_map(state, self.spec.num_special_tokens, image_hw)
        return state

    def forward(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        *,
        source_head: nn.Module | None = None,
        output_hidden_states: bool = False,
        mix: Mix | None = None,
    ) -> ForwardOutput:
        """Run `model` once and return its logits, last feature map, pooled feature (and more on request).

        Args:
            model: the classifier to run, possibly wrapped (DDP); hooks go on the unwrapped module.
            pixel_values: B x 3 x H x W images (unmixed).
            source_head: a module applied to the pooled feature inside the forward pass (so that DDP sees it).
            output_hidden_states: also return the per-stage feature maps.
            mix: mix the batch first: the images (mixup, CutMix) or, for manifold mixup at stage k > 0, the output
                of stage k - 1 inside the forward pass.
        """
        if mix is not None and mix.strategy == "manifold_mixup" and mix.stage > 0:
            with self.mix_stage_output(model, mix.stage - 1, lambda hidden: mix_tensor(hidden, mix)):
                return self.forward(
                    model, pixel_values, source_head=source_head, output_hidden_states=output_hidden_states
                )
        if mix is not None:
            pixel_values = mix_inputs(pixel_values, mix)
        inner = unwrap_model(model)
        captured: dict[str, torch.Tensor] = {}

        def read_base(_module, _args, output):
            captured["last"] = output["last_hidden_state"] if isinstance(output, dict) else output[0]

        def read_head(_module, args):
            captured["pooled"] = args[0]
            if source_head is not None:
                captured["source_logits"] = source_head(args[0])

        handles = [
            inner.base_model.register_forward_hook(read_base),
            self.head(inner).register_forward_pre_hook(read_head),
        ]
        try:
            kwargs = {"output_hidden_states": True} if output_hidden_states else {}
            outputs = model(pixel_values=pixel_values, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        image_hw = tuple(pixel_values.shape[-2:])
        hidden_maps = []
        if output_hidden_states:
            states = outputs[self.spec.hidden_states_key]
            # one map per stage: most families also return the embedding output first, MobileNetV2 does not
            states = states[len(states) - len(self.stages(inner)) :]
            hidden_maps = [self.to_map(state, image_hw) for state in states]
        return ForwardOutput(
            logits=outputs["logits"],
            feature_map=self.to_map(captured["last"], image_hw),
            pooled=captured["pooled"],
            source_logits=captured.get("source_logits"),
            hidden_maps=hidden_maps,
        )

    @contextmanager
    def mix_stage_output(self, model: nn.Module, stage_index: int, mix_fn):
        """Within the context, the output of stage `stage_index` of `model` is replaced by `mix_fn(output)`
        (manifold mixup). Tuple outputs have their first element mixed. The hook runs before any other forward hook
        of the stage (such as the ones `transformers` installs, once, to record `hidden_states`), so that the
        recorded hidden state of the mixed stage is the mixed one whatever the order the hooks were installed in."""

        def hook(_module, _args, output):
            if isinstance(output, tuple):
                return (mix_fn(output[0]), *output[1:])
            return mix_fn(output)

        handle = self.stages(model)[stage_index].register_forward_hook(hook, prepend=True)
        try:
            yield
        finally:
            handle.remove()


def build_source_head_copy(adapter: BackboneAdapter, source_model: nn.Module) -> nn.Linear:
    """A trainable copy of the source model's head (the auxiliary head of SMILE, Co-Tuning's source head)."""
    head = adapter.head(source_model)
    copy = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
    copy.load_state_dict(head.state_dict())
    return copy.to(device=head.weight.device, dtype=head.weight.dtype)
