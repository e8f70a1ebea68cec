# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Transfer-learning methods and their regularisers: the registry (`registry.py`), the interface (`base.py`), the
declaration of their hyperparameters (`hyperparameters.py`), what their one-off work reads (`context.py`) and one
module per regulariser.

Words, used in this sense throughout the package, its docstrings and its help texts:

- a **method** is what a run trains with, chosen with `--method` (`SmileTrainingArguments.method`) and written as a
  **method spec**: a regulariser, a mixing strategy, or both joined by `+` (`"smile"`, `"mixup"`, `"l2sp+cutmix"`).
  What reads a spec says "method": [`parse_method`], [`method_title`], [`method_hyperparameters`]. The **method
  state** (`method_state.safetensors` in a checkpoint) is everything a run keeps for its method beyond the student:
  teacher, source head, regulariser state.
- a **regulariser** is the part of a method that adds loss terms to the target cross-entropy and does the one-off
  work they need: an instance of a [`Regularizer`] subclass, registered by name in [`REGULARIZERS`] with
  [`register_regularizer`], built by [`build_regularizer`] (the `"l2sp"` of `"l2sp+cutmix"`, `SmileTrainingArguments.regularizer`);
  its one-off work reads a [`RegularizerContext`] and a `Trainer` runs it through a [`RegularizerCallback`].
- a **mixing strategy** (`"mixup"`, `"cutmix"`, `"manifold_mixup"`: [`smile_hf.mixing`]) mixes the training batches.

Importing this package registers the built-in regularisers. Each regulariser module imports the registry, never this
package, so that no module imports, at load time, a module that imports it back.
"""

from __future__ import annotations

# The registration order is the order of the regularisers' fields in SmileTrainingArguments (and `--help`).
# isort: off
from . import smile, l2sp, delta, delta_tllib, bss, rifle, cotuning, finetune, fixmatch, mean_teacher  # noqa: F401  (register the built-in regularisers)
# isort: on

from .base import (
    UNLABELED_VIEWS,
    LossInputs,
    LossTerms,
    Regularizer,
    RegularizerCallback,
    UnlabeledInputs,
    half_squared_norm,
)
from .buffers import BufferDict, BufferList
from .context import RegularizerContext, as_context, for_each_training_batch
from .hyperparameters import HyperParameter
from .registry import (
    REGULARIZERS,
    build_regularizer,
    declared_hyperparameters,
    get_regularizer_class,
    method_hyperparameters,
    method_title,
    parse_method,
    register_regularizer,
    unlabeled_methods,
)

__all__ = [
    "REGULARIZERS",
    "UNLABELED_VIEWS",
    "UnlabeledInputs",
    "BufferDict",
    "BufferList",
    "HyperParameter",
    "LossInputs",
    "LossTerms",
    "RegularizerCallback",
    "RegularizerContext",
    "Regularizer",
    "as_context",
    "build_regularizer",
    "declared_hyperparameters",
    "for_each_training_batch",
    "get_regularizer_class",
    "half_squared_norm",
    "method_hyperparameters",
    "method_title",
    "parse_method",
    "register_regularizer",
    "unlabeled_methods",
]
