# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Backbone adapter: the last feature map, the pooled feature and the classifier head of an image classifier, all
from one forward pass of the model.

The adapter does not re-implement any architecture. It runs the model's own forward and reads, with hooks,
- the output of the trunk (see [`find_trunk`]), whose `last_hidden_state` is the last feature map (B x C x H x W
  for CNNs; for ViT-like models a token sequence, reshaped to B x C x h x w with the special tokens excluded;
  for timm models the output of `forward_features`),
- the input of the final `nn.Linear` classifier(s), which is the pooled feature the head sees (concatenated when a
  distilled model has two heads reading different features),
- with `output_hidden_states`, the output of every backbone stage, as a map.
The parts are derived from the model ([`resolve_spec`], [`BackboneAdapter.stages`]); [`register_backbone`] overrides them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from ..mixing import Mix, mix_inputs, mix_tensor
from .capture import Capture, capturing
from .heads import combine_heads
from .spec import (
    BACKBONES,
    SOURCE_HEAD_NAME,
    BackboneSpec,
    UnsupportedBackboneError,
    unsupported_reason,
    unwrap_model,
)
from .structure import (
    is_timm,
    module_path,
    probe,
    resolve_spec,
    stage_lists,
)


@dataclass
class ForwardOutput:
    """What one forward pass of a classifier exposes.

    Attributes:
        logits: B x K logits of the model's own head.
        feature_map: B x C x H x W last feature map before pooling.
        pooled: B x D feature the head is applied to.
        source_logits: logits of the attached source head on `pooled`, when asked for.
        hidden_maps: per-stage feature maps (B x C_j x H_j x W_j, stage order), when asked for.
        attention_mask: text models only, the B x T mask of the input the states were computed on (for a mixed
            input, the union of each pair's masks); None for images.
    """

    logits: torch.Tensor
    feature_map: torch.Tensor
    pooled: torch.Tensor
    source_logits: torch.Tensor | None = None
    hidden_maps: list[torch.Tensor] = field(default_factory=list)
    attention_mask: torch.Tensor | None = None


def _grid(num_patches: int, image_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The h x w grid of `num_patches` cells with the aspect ratio of the image, or None if there is none."""
    height = max(1, round(math.sqrt(num_patches * image_hw[0] / image_hw[1])))
    width = num_patches // height
    return (height, width) if num_patches > 0 and height * width == num_patches else None


def tokens_to_map(tokens: torch.Tensor, num_special_tokens: int, image_hw: tuple[int, int]) -> torch.Tensor:
    """Reshape B x (S + N) x C tokens into a B x C x h x w map, dropping the S special tokens.

    The grid h x w is the one with N cells and the aspect ratio of the input image.
    """
    patches = tokens[:, num_special_tokens:, :]
    batch, num_patches, channels = patches.shape
    grid = _grid(num_patches, image_hw)
    if grid is None:
        raise ValueError(f"Cannot arrange {num_patches} patch tokens in a grid for an input of size {image_hw}.")
    return patches.transpose(1, 2).reshape(batch, channels, *grid)


def count_leading_tokens(num_tokens: int, max_special: int, image_hw: tuple[int, int]) -> int:
    """The number S <= `max_special` of special tokens in a sequence of `num_tokens`: the largest one leaving a grid
    of patches with the image's aspect ratio (a model's stages need not all carry its special tokens)."""
    for special in range(min(max_special, num_tokens - 1), -1, -1):
        if _grid(num_tokens - special, image_hw) is not None:
            return special
    raise ValueError(f"Cannot arrange {num_tokens} tokens in a grid for an input of size {image_hw}.")


def trained_copy(head: nn.Module) -> nn.Module:
    """`head`, or for a peft `modules_to_save` wrapper the copy its active adapter trains."""
    copies = getattr(head, "modules_to_save", None)
    if isinstance(copies, nn.ModuleDict) and getattr(head, "active_adapters", None):
        return copies[head.active_adapters[0]]
    return head


ADAPTER_CLASSES: list[tuple[Callable[[nn.Module], bool], type]] = []
"""(predicate, subclass): `BackboneAdapter(model)` is an instance of the first subclass whose predicate accepts the
model (text classifiers: [`smile_hf.backbones.text.TextBackboneAdapter`]); else a `BackboneAdapter`."""


def register_adapter_class(accepts: Callable[[nn.Module], bool], adapter_class: type) -> None:
    """Make `BackboneAdapter(model)` build an `adapter_class` for the models `accepts` (unwrapped) returns True for."""
    ADAPTER_CLASSES.append((accepts, adapter_class))


class BackboneAdapter:
    """Feature map, pooled feature and classifier head of an image classifier (see [`BackboneSpec`]).

    One adapter serves every model of the family (student and teacher alike): each method takes the model.

    Args:
        model (`PreTrainedModel`): an image classifier taking B x 3 x H x W `pixel_values`.
    """

    def __new__(cls, model: nn.Module | None = None):
        if cls is BackboneAdapter and model is not None:
            for accepts, adapter_class in ADAPTER_CLASSES:
                if accepts(unwrap_model(model)):
                    return super().__new__(adapter_class)
        return super().__new__(cls)

    def __init__(self, model: nn.Module):
        model = unwrap_model(model)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        reason = unsupported_reason(model_type)
        if reason is not None:
            raise UnsupportedBackboneError(f"smile_hf cannot train model type '{model_type}': {reason}.")
        self.model_type = model_type
        try:
            self.spec = probe(model, resolve_spec(model, BACKBONES.get(model_type, BackboneSpec())))
        except UnsupportedBackboneError as error:
            raise UnsupportedBackboneError(
                f"smile_hf could not find the parts of model type '{model_type}' ({type(model).__name__}): {error} "
                "To add it, call smile_hf.register_backbone('<model_type>', BackboneSpec(...)) before building the "
                "trainer."
            ) from error
        self.head(model)  # fail early if the head is not where the spec says
        self.stages(model)

    def model_inputs(self, batch) -> torch.Tensor:
        """What a collated batch gives the adapter's `forward`: the images (`pixel_values`)."""
        return batch["pixel_values"]

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The keyword arguments of a plain call of the model on `inputs` (what [`model_inputs`] returned)."""
        return {"pixel_values": inputs}

    def batch_size(self, inputs: torch.Tensor) -> int:
        """The number of samples in `inputs` (what [`model_inputs`] returned)."""
        return inputs.shape[0]

    def check_method(self, regularizer, mixing: str | None) -> None:
        """Raise a one-line error for a regulariser or mixing strategy the family cannot use (images: none)."""

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

    def classifiers(self, model: nn.Module) -> list[nn.Linear]:
        """The final linear classifier(s) of `model`, in the order the model calls them."""
        heads = [trained_copy(self._module(model, path, "classifier head")) for path in self.spec.head.split(",")]
        for head in heads:
            if not isinstance(head, nn.Linear):
                raise UnsupportedBackboneError(
                    f"The classifier of '{self.model_type}' at '{self.spec.head}' is a {type(head).__name__}, not an "
                    "nn.Linear (a model loaded with num_labels=0 has no head)."
                )
        return heads

    def head(self, model: nn.Module) -> nn.Module:
        """The final classifier of `model`: its `nn.Linear`, or a [`ClassifierHeads`] view of its linear classifiers
        when it averages several (whose inputs are then concatenated into the pooled feature unless shared)."""
        return combine_heads(self.classifiers(model), shared_input=self.spec.shared_head_input)

    def stages(self, model: nn.Module) -> nn.ModuleList:
        """The backbone stages of `model`, in order. `spec.stages` names an `nn.ModuleList`, or the last module of
        each group of a list of lists (`<path>[-1]`, see [`stage_lists`]), or the stage modules themselves
        (comma-separated, as for timm models); `|` separates alternatives."""
        inner = unwrap_model(model)
        for path in self.spec.stages.split("|"):
            try:
                if "," in path:
                    return nn.ModuleList([inner.get_submodule(name) for name in path.split(",")])
                outer = path.removesuffix("[-1]")
                stages = inner.get_submodule(outer)
            except AttributeError:
                continue
            return stage_lists(stages, outer)[path] if path.endswith("[-1]") else stages
        return self._module(model, self.spec.stages, "list of stages")  # raises the error

    def _backbone_named(self, model: nn.Module, what: str) -> Iterator[tuple[str, torch.Tensor]]:
        inner = unwrap_model(model)
        excluded = tuple(f"{path}." for path in [SOURCE_HEAD_NAME, *self.spec.head.split(",")])
        base = "" if inner.base_model is inner else f"{module_path(inner, inner.base_model)}."
        for name, tensor in getattr(inner, what)():
            if not name.startswith(excluded):
                yield name.removeprefix(base), tensor

    def backbone_named_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters of the backbone: every parameter of the classifier but those of its final linear
        classifier(s) and of attached heads (post-pooling norms such as LeViT's BatchNorm included). Named from
        `model.base_model` (as `base_model.named_parameters()` names them), or from the classifier for the few
        outside it."""
        yield from self._backbone_named(model, "named_parameters")

    def backbone_named_buffers(self, model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """Buffers of the backbone (e.g. BatchNorm running statistics), named as
        [`~BackboneAdapter.backbone_named_parameters`]."""
        yield from self._backbone_named(model, "named_buffers")

    def to_map(self, state: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """A trunk or stage output as a B x C x H x W map (tokens: special tokens dropped)."""
        if self.spec.tokens and state.dim() == 3:
            special = count_leading_tokens(state.shape[1], self.spec.num_special_tokens, image_hw)
            return tokens_to_map(state, special, image_hw)
        if self.spec.channels_last and state.dim() == 4:
            return state.permute(0, 3, 1, 2)
        return state

    @contextmanager
    def _timm_features(self, model: nn.Module, capture: Capture) -> Iterator[None]:
        """timm: within the context, `capture.last` receives the output of `forward_features` (a method, not a
        module), patched for the forward pass only: a patched copy made by `copy.deepcopy` would call the
        original's method."""
        trunk = model.get_submodule(self.spec.trunk)
        forward_features = trunk.forward_features

        def read(*args, **kwargs):
            capture.last = forward_features(*args, **kwargs)
            return capture.last

        trunk.forward_features = read
        try:
            yield
        finally:
            del trunk.forward_features

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
            output_hidden_states: also return the per-stage feature maps (read from the stage outputs).
            mix: mix the batch first: the images (mixup, CutMix) or, for manifold mixup at stage k > 0, the output
                of stage k - 1 inside the forward pass.
        """
        inner = unwrap_model(model)
        mixes_a_stage = mix is not None and mix.strategy == "manifold_mixup" and mix.stage > 0
        stages = self.stages(inner) if output_hidden_states or mixes_a_stage else ()
        mix_stage = None
        if mixes_a_stage:
            mix_stage = stages[mix.stage - 1]  # stage k > 0 mixes the output of stage k - 1
        elif mix is not None:
            pixel_values = mix_inputs(pixel_values, mix)
        capture = Capture(
            trunk=None,
            heads=(),
            source_head=source_head,
            stages=stages if output_hidden_states else (),
            mix_stage=mix_stage,
            mix_fn=(lambda hidden: mix_tensor(hidden, mix)) if mix_stage is not None else None,
        )
        with self.reading(model, capture):
            outputs = model(pixel_values=pixel_values)
        return self.forward_output(capture, outputs, tuple(pixel_values.shape[-2:]))

    @contextmanager
    def reading(self, model: nn.Module, capture: Capture) -> Iterator[Capture]:
        """Within the context, the forward pass of `model` (possibly wrapped) that the caller runs fills in
        `capture` (its trunk and classifiers are set here); [`~BackboneAdapter.forward_output`] then reads it. This
        lets a caller read the features of a forward pass it runs itself (the stock loss of an evaluation batch)."""
        inner = unwrap_model(model)
        timm = is_timm(inner)
        capture.trunk = None if timm else inner.get_submodule(self.spec.trunk)
        capture.heads = self.classifiers(inner)
        capture.shared_head_input = self.spec.shared_head_input
        with capturing(capture), self._timm_features(inner, capture) if timm else nullcontext():
            yield capture

    def forward_output(self, capture: Capture, outputs, image_hw: tuple[int, int]) -> ForwardOutput:
        """The [`ForwardOutput`] of a forward pass read by [`~BackboneAdapter.reading`] (`outputs`: what the model
        returned; `image_hw`: the height and width of its input)."""
        return ForwardOutput(
            logits=outputs["logits"] if "logits" in outputs else outputs[0],  # PP-LCNet returns its logits first
            feature_map=self.to_map(capture.last, image_hw),
            pooled=capture.pooled,
            source_logits=capture.source_logits,
            hidden_maps=[self.to_map(state, image_hw) for state in capture.stage_outputs],
        )
