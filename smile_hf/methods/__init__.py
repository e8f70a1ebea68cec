# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Transfer-learning regularisers: the registry (`registry.py`), the interface (`base.py`), the declaration of their
hyperparameters (`hyperparameters.py`), what their one-off work reads (`context.py`) and one module per regulariser.

Importing this package registers the built-in regularisers. Each regulariser module imports the registry, never this
package, so that no module imports, at load time, a module that imports it back.
"""

from __future__ import annotations

# The registration order is the order of the regularisers' fields in SmileTrainingArguments (and `--help`).
# isort: off
from . import smile, l2sp, delta, delta_tllib, bss, rifle, cotuning, finetune  # noqa: F401  (register the built-in regularisers)
# isort: on

from .base import LossInputs, LossTerms, MethodCallback, TransferMethod, half_squared_norm
from .buffers import BufferDict, BufferList
from .context import MethodContext, as_context, for_each_training_batch
from .hyperparameters import HyperParameter
from .registry import (
    METHODS,
    build_method,
    declared_hyperparameters,
    get_method_class,
    method_hyperparameters,
    method_title,
    parse_method,
    register_method,
)

__all__ = [
    "METHODS",
    "BufferDict",
    "BufferList",
    "HyperParameter",
    "LossInputs",
    "LossTerms",
    "MethodCallback",
    "MethodContext",
    "TransferMethod",
    "as_context",
    "build_method",
    "declared_hyperparameters",
    "for_each_training_batch",
    "get_method_class",
    "half_squared_norm",
    "method_hyperparameters",
    "method_title",
    "parse_method",
    "register_method",
]
