# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Backbone adapter: the last feature map, the pooled feature, the classifier head(s) and the stages of any
supported image classifier, derived from the model's structure and config (see `adapter.py` and `structure.py`),
read by the hooks of `capture.py`."""

from .adapter import BackboneAdapter, ForwardOutput, count_leading_tokens, tokens_to_map
from .capture import first_tensor, map_first_tensor, record_outputs, stop_recording
from .heads import ClassifierHeads, build_source_head_copy, combine_heads
from .spec import (
    BACKBONES,
    SOURCE_HEAD_NAME,
    UNSUPPORTED,
    BackboneSpec,
    UnsupportedBackboneError,
    register_backbone,
    unsupported_reason,
    unwrap_model,
)
from .text import TEXT_FAMILIES, TextBackboneAdapter, is_text_classifier

__all__ = [
    "BACKBONES", "SOURCE_HEAD_NAME", "UNSUPPORTED", "BackboneAdapter", "BackboneSpec", "ClassifierHeads",
    "ForwardOutput", "UnsupportedBackboneError", "build_source_head_copy", "combine_heads", "count_leading_tokens",
    "TEXT_FAMILIES", "TextBackboneAdapter", "first_tensor", "is_text_classifier", "map_first_tensor", "record_outputs",
    "register_backbone", "stop_recording", "tokens_to_map", "unsupported_reason", "unwrap_model",
]  # fmt: skip
