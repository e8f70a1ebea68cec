# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Finding the parts of an image classifier from its structure and config: the trunk (whose `last_hidden_state` is
the last feature map), the final linear classifier(s), the number of special tokens, and the backbone stages.

The stages are found by running the model once on one random image with `output_hidden_states=True` and taking the
`nn.ModuleList` whose children's outputs are the model's hidden states (compared by size, sum and sum of squares,
which a reshape or a permutation of the positions leaves unchanged); the same pass checks that the logits are the
mean of the classifiers' outputs.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..channels import model_num_channels
from .capture import Capture, capturing, first_tensor
from .spec import SOURCE_HEAD_NAME, BackboneSpec, UnsupportedBackboneError

TOKEN_PARAMETERS = ("cls_token", "class_embedding", "distillation_token", "register_tokens")
"""Names of the parameters holding the tokens a ViT-like model puts before its patch tokens."""
DEFAULT_PROBE_SIZE = 224


def is_timm(model: nn.Module) -> bool:
    """Whether `model` wraps a timm model (`TimmWrapperForImageClassification`)."""
    return getattr(getattr(model, "config", None), "model_type", None) == "timm_wrapper"


def module_path(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of `module` inside `model`."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise UnsupportedBackboneError(f"{type(module).__name__} is not a submodule of {type(model).__name__}.")


def find_trunk(model: nn.Module) -> str:
    """Dotted path of the trunk: `model.base_model` (timm: the timm model), or, for classifiers that are their own
    base model (CLIP, SigLIP, MetaCLIP 2, HGNet-V2, PP-LCNet), their one `PreTrainedModel` child (the vision tower)
    or else their `encoder`."""
    base = model.base_model
    if base is not model:
        return module_path(model, base)
    towers = [name for name, child in model.named_children() if hasattr(child, "config")]
    if len(towers) == 1:
        return towers[0]
    if isinstance(getattr(model, "encoder", None), nn.Module):
        return "encoder"
    raise UnsupportedBackboneError(
        f"{type(model).__name__} is its own base model and has neither one vision tower nor an `encoder`: pass "
        "BackboneSpec(trunk='<path of the module returning last_hidden_state>') to register_backbone."
    )


def wrapper_path(name: str) -> str:
    """The path of a peft `modules_to_save` wrapper for the path of one of its linear copies
    (`<head>.original_module`, `<head>.modules_to_save.<adapter>`), else `name`."""
    parts = name.split(".")
    for marker in ("original_module", "modules_to_save"):
        if marker in parts:
            return ".".join(parts[: parts.index(marker)])
    return name


def find_heads(model: nn.Module, trunk: str) -> str:
    """Comma-separated dotted paths of the final classifiers: timm's `get_classifier()`, else every `nn.Linear`
    outside the trunk (and outside an attached source head) with `config.num_labels` outputs."""
    if is_timm(model):
        heads = model.timm_model.get_classifier()
        heads = heads if isinstance(heads, (tuple, list)) else (heads,)
        return ",".join(module_path(model, head) for head in heads)
    num_labels = model.config.num_labels
    excluded = (f"{trunk}.", f"{SOURCE_HEAD_NAME}.")
    paths = [
        wrapper_path(name)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_labels and not f"{name}.".startswith(excluded)
    ]
    paths = list(dict.fromkeys(paths))
    if not paths:
        raise UnsupportedBackboneError(
            f"{type(model).__name__} has no nn.Linear with config.num_labels={num_labels} outputs outside its base "
            "model (a model loaded with num_labels=0 has no head): pass BackboneSpec(head='<path>') to "
            "register_backbone."
        )
    return ",".join(paths)


def count_special_tokens(model: nn.Module, trunk: nn.Module) -> int:
    """The most tokens placed before the patch tokens: timm's `num_prefix_tokens`, else the tokens held by the
    trunk's class / distillation / register token parameters."""
    if is_timm(model):
        return int(getattr(trunk, "num_prefix_tokens", 0))
    count = 0
    for name, parameter in trunk.named_parameters():
        if name.rsplit(".", 1)[-1] in TOKEN_PARAMETERS:
            count += parameter.shape[-2] if parameter.dim() >= 2 else 1
    return count


def resolve_spec(model: nn.Module, given: BackboneSpec) -> BackboneSpec:
    """`given` with its trunk, heads, special tokens and layout derived where left to `None` (stages are found later,
    by [`BackboneAdapter.stages`], because that needs a forward pass)."""
    trunk = given.trunk or ("timm_model" if is_timm(model) else find_trunk(model))
    head = given.head or find_heads(model, trunk)
    special = given.num_special_tokens
    if special is None:
        special = count_special_tokens(model, model.get_submodule(trunk))
    channels_last = given.channels_last or (is_timm(model) and getattr(model.timm_model, "output_fmt", "") == "NHWC")
    return replace(given, trunk=trunk, head=head, num_special_tokens=special, channels_last=channels_last)


def timm_stages(model: nn.Module) -> str:
    """The stage modules of a timm model, from its `feature_info` (the modules its `features_only` mode reads), as
    comma-separated dotted paths."""
    info = getattr(model.timm_model, "feature_info", None) or []
    names = [entry["module"] for entry in info if isinstance(entry, dict) and entry.get("module")]
    if not names:
        raise UnsupportedBackboneError(
            f"timm model {type(model.timm_model).__name__} has no feature_info: pass BackboneSpec(stages='<path>') to "
            "register_backbone."
        )
    return ",".join(f"timm_model.{name}" for name in names)


def _fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """(size, sum, sum of squares): unchanged by reshapes and permutations of the positions."""
    values = tensor.detach().double()
    size = torch.tensor(float(values.numel()), dtype=torch.float64, device=values.device)
    return torch.stack([size, values.sum(), values.pow(2).sum()])


def _probe_size(model: nn.Module) -> tuple[int, int]:
    """The input size the model is built for: `config.image_size` (or its `vision_config`'s), timm's `pretrained_cfg["input_size"]`, or 224."""
    config = model.config
    size = getattr(config, "image_size", None) or getattr(getattr(config, "vision_config", None), "image_size", None)
    if size is None and is_timm(model):  # a ViT's patch embedding knows its size; else the pretrained config's
        size = getattr(getattr(model.timm_model, "patch_embed", None), "img_size", None)
        size = size or getattr(model.timm_model, "pretrained_cfg", {}).get("input_size", (3, DEFAULT_PROBE_SIZE))[1:]
    size = size or DEFAULT_PROBE_SIZE
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    return int(size), int(size)


def stage_lists(trunk: nn.Module, prefix: str) -> dict[str, nn.ModuleList]:
    """The candidate lists of stages inside the trunk, by path: every non-empty `nn.ModuleList`, and, for a list of
    lists (PVT, PoolFormer: blocks grouped by stage), the list of the last module of each group, as `<path>[-1]`."""
    lists = {}
    for name, module in trunk.named_modules(prefix=prefix):
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            lists[name] = module
            if all(isinstance(child, nn.ModuleList) and len(child) > 0 for child in module):
                lists[f"{name}[-1]"] = nn.ModuleList([child[-1] for child in module])
    return lists


def _is_subsequence(found: list[torch.Tensor], expected: list[torch.Tensor]) -> bool:
    position = 0
    for fingerprint in found:
        while position < len(expected) and not torch.allclose(fingerprint, expected[position], rtol=1e-4, atol=1e-6):
            position += 1
        if position == len(expected):
            return False
        position += 1
    return True


def stage_fingerprints(children: list[tuple[str, nn.Module]], records: list) -> dict[str, list[torch.Tensor]]:
    """The fingerprints of the outputs of every candidate list's children, by list name, in call order: `children`
    are `(list name, child)` pairs, `records` the calls of a [`Capture`]."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in children}
    for module, _, output in records:
        first = first_tensor(output)
        if not isinstance(first, torch.Tensor):
            continue
        for name, child in children:  # a child of several lists counts in each
            if child is module:
                outputs[name].append(_fingerprint(first))
    return outputs


def _matching_lists(lists: dict, outputs: dict, states) -> list[str]:
    """The lists whose children, each called once, output hidden states of `states`, in order."""
    expected = [_fingerprint(state) for state in states]
    return [
        name for name, found in outputs.items()
        if len(found) == len(lists[name]) and _is_subsequence(found, expected)
    ]  # fmt: skip


@torch.no_grad()
def probe(model: nn.Module, spec: BackboneSpec) -> BackboneSpec:
    """`spec` completed by one forward pass of `model` (eval mode, one random image of the config's size):

    - `stages`, if not given: among the lists of [`stage_lists`] whose children each output one of the model's
      hidden states, in order, the one of stage-level groups, else the longest, else the shallowest (timm: from
      `feature_info`, see [`timm_stages`]);
    - `shared_head_input`: whether several classifiers read one feature.

    Raises [`UnsupportedBackboneError`] unless the logits are the mean of the classifiers' outputs (what the source
    head copy computes)."""
    find = spec.stages is None and not is_timm(model)
    lists = stage_lists(model.get_submodule(spec.trunk), spec.trunk) if find else {}
    heads = [model.get_submodule(path) for path in spec.head.split(",")]
    children = [(name, child) for name, module in lists.items() for child in module]
    capture = Capture(trunk=None, heads=(), record=[*heads, *(child for _, child in children)])
    parameter = next(model.parameters())
    channels = model_num_channels(model)
    pixel_values = torch.randn(1, channels, *_probe_size(model), generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        with capturing(capture, keep_hooks=False):  # a one-off pass: no hook left on the model
            result = model(pixel_values=pixel_values.to(device=parameter.device, dtype=parameter.dtype), **(
                {"output_hidden_states": True} if find else {}
            ))
    finally:
        model.train(was_training)
    head_io = [(inputs, output) for module, inputs, output in capture.records if any(module is h for h in heads)]
    outputs = stage_fingerprints(children, capture.records)
    logits = result["logits"] if "logits" in result else result[0]
    if len(head_io) != len(heads) or not torch.allclose(
        torch.stack([out for _, out in head_io]).float().mean(0), logits.float(), rtol=1e-3, atol=1e-4
    ):
        raise UnsupportedBackboneError(
            f"The logits of {type(model).__name__} are not the mean of its classifiers '{spec.head}' (called "
            f"{len(head_io)} times), so a copy of its head could not reproduce them: pass BackboneSpec(head=...) to "
            "register_backbone."
        )
    spec = replace(spec, shared_head_input=all(inp is head_io[0][0] for inp, _ in head_io))
    if not find:
        return spec if spec.stages is not None else replace(spec, stages=timm_stages(model))
    matches = _matching_lists(lists, outputs, result.get("hidden_states") or ())
    if not matches:
        raise UnsupportedBackboneError(
            f"No nn.ModuleList of {type(model).__name__} outputs its hidden states, so its stages (for DELTA and "
            "manifold mixup) are unknown: pass BackboneSpec(stages='<path>') to register_backbone."
        )
    # stage-level groups first (PVT's last block of each stage rather than one stage's blocks), then the longest
    best = max(matches, key=lambda name: (name.endswith("[-1]"), len(lists[name]), -name.count(".")))
    return replace(spec, stages=best)
