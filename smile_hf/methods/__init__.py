# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Transfer-learning methods: the registry (`registry.py`), the interface (`base.py`) and one module per method.

Importing this package registers the built-in methods. Each method module imports the registry, never this
package, so that no module imports, at load time, a module that imports it back.
"""

from __future__ import annotations

from . import bss, cotuning, delta, finetune, l2sp, rifle, smile  # noqa: F401  (register the built-in methods)
from .base import LossInputs, LossTerms, TransferMethod, half_squared_norm
from .registry import (
    METHODS,
    build_method,
    get_method_class,
    method_hyperparameters,
    method_title,
    parse_method,
    register_method,
)

__all__ = [
    "METHODS",
    "LossInputs",
    "LossTerms",
    "TransferMethod",
    "build_method",
    "get_method_class",
    "half_squared_norm",
    "method_hyperparameters",
    "method_title",
    "parse_method",
    "register_method",
]
