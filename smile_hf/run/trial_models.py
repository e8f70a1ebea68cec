# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The models a search's trials start from, read from disk once per search: each trial trains a copy.

A trial used to load the checkpoint twice (the student with its new head, and the source model with its original
head for the methods that need one), exactly as a plain run does. The search now loads both once, the student under
the run's seed as each trial's own load drew its new head, and hands every trial deep copies: the same weights, so
the same trial results, without reading and initialising the checkpoint per trial.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn
from transformers import set_seed

from ..config import SmileTrainingArguments
from ..data import PreparedData
from ..methods import get_regularizer_class
from ..modeling import load_source_model, load_student_with_classes_of, select_loading_kwargs
from .arguments import ModelArguments
from .loading import student


@dataclass
class TrialModels:
    """The student (the checkpoint with a new head for the data's classes) and, for the methods that need it, the
    source model (the checkpoint with its original head), as loaded once; [`copies`] gives each trial its own."""

    student: nn.Module
    source: nn.Module | None = None

    def copies(self) -> tuple[nn.Module, nn.Module | None]:
        """A deep copy of the student and of the source model (None where the method needs none) for one trial: the
        trainer moves and trains the student and the EMA updates a teacher built from the source in place."""
        return copy.deepcopy(self.student), copy.deepcopy(self.source)


def load_trial_models(
    model_args: ModelArguments, training_args: SmileTrainingArguments, data: PreparedData
) -> TrialModels:
    """Load the trials' models once: the student as `SmileTrainer` loads it from the checkpoint's name (the loading
    options and the data's classes of [`student`], its new head drawn after `set_seed(training_args.seed)`, as in
    each trial), and the source model when the method needs it."""
    args = copy.deepcopy(training_args)
    name = student(model_args, args, data, from_scratch=False)
    train = data.search_train if getattr(data, "search_train", None) is not None else data.train
    set_seed(args.seed)
    model = load_student_with_classes_of(name, train, dict(args.model_init_kwargs))
    source = None
    if get_regularizer_class(args.method).needs_source_model:
        source = load_source_model(name, **select_loading_kwargs(dict(args.model_init_kwargs)))
    return TrialModels(model, source)
