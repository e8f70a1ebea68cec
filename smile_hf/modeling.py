# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Loading the two models of transfer learning from one checkpoint: the student (pre-trained backbone + a new
head for the target classes) and the source model (pre-trained backbone + its original head, for the teacher); the
checkpoint's image processor; and the class names that go into the student's config."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.utils import logging

from ._compat import hide_from_save
from .backbones import SOURCE_HEAD_NAME, TEXT_FAMILIES, BackboneAdapter, is_text_classifier
from .lora import check_base_is_source, peft_model_of

logger = logging.get_logger(__name__)

LOADING_KWARGS = ("cache_dir", "revision", "token", "trust_remote_code", "local_files_only", "subfolder")
"""`from_pretrained` arguments that say where and how to load a checkpoint (the same for student, source model and
image processor), as opposed to those that shape the student (`num_labels`, `id2label`, `torch_dtype`...)."""

_GENERIC_LABEL = re.compile(r"^(LABEL_)?\d+$")


def load_source_model(name_or_path: str, *, trust_remote_code: bool = False, **kwargs) -> PreTrainedModel:
    """The pre-trained classifier with its source head, as published (local path or Hub id)."""
    return AutoModelForImageClassification.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)


def load_text_source_model(name_or_path: str, *, trust_remote_code: bool = False, **kwargs) -> PreTrainedModel:
    """The pre-trained text classifier with its source head, as published (local path or Hub id); a checkpoint
    without a sequence-classification head gets one initialised by transformers
    ([`smile_hf.text.has_classification_head`] tells)."""
    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, **kwargs
    )


def load_student(
    name_or_path: str,
    num_labels: int,
    *,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
    trust_remote_code: bool = False,
    **kwargs,
) -> PreTrainedModel:
    """The pre-trained backbone with a new, freshly initialised head of `num_labels` classes.

    `from_pretrained(..., num_labels=N, ignore_mismatched_sizes=True)` keeps the source head whenever the source
    already has N classes; here the head is always re-initialised (PyTorch's default `nn.Linear` initialisation),
    as in the SMILE reference.
    """
    if id2label is None:
        id2label = {i: str(i) for i in range(num_labels)}
    if len(id2label) != num_labels:  # else `id2label` sets it: num_labels first warns against the checkpoint's map
        kwargs["num_labels"] = num_labels
    model = AutoModelForImageClassification.from_pretrained(
        name_or_path,
        id2label=id2label,
        label2id=label2id or {v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    reset_head(model)
    return model


def load_text_student(
    name_or_path: str,
    num_labels: int,
    *,
    id2label: dict[int, str] | None = None,
    trust_remote_code: bool = False,
    **kwargs,
) -> PreTrainedModel:
    """The pre-trained text model with a new, freshly initialised classifier head of `num_labels` classes (the text
    counterpart of [`load_student`]: the head is re-initialised even when the source has
    `num_labels` classes already).

    Args:
        name_or_path (`str`): the pre-trained checkpoint (a sequence classifier, or a pre-training checkpoint).
        num_labels (`int`): the number of target classes.
        id2label (`dict[int, str]`, *optional*): the class names.
        trust_remote_code (`bool`, *optional*, defaults to `False`): passed to `from_pretrained`.
        **kwargs: other `from_pretrained` arguments.

    Returns:
        `PreTrainedModel`: the `*ForSequenceClassification` student.
    """
    id2label = id2label or {i: str(i) for i in range(num_labels)}
    if len(id2label) != num_labels:
        raise ValueError(f"id2label names {len(id2label)} classes but num_labels is {num_labels}.")
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path,
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    reset_head(model)
    return model


def is_text_checkpoint(name_or_path: str, **kwargs) -> bool:
    """Whether the checkpoint is one of the text families (its `config.model_type`), whose student is a
    `*ForSequenceClassification` ([`load_text_student`])."""
    try:
        return AutoConfig.from_pretrained(name_or_path, **kwargs).model_type in TEXT_FAMILIES
    except (OSError, ValueError):  # left to the image loader, whose error names the problem
        return False


def load_student_with_classes_of(name_or_path: str, train_dataset, init_kwargs: dict) -> PreTrainedModel:
    """The student of checkpoint `name_or_path` (see [`load_student`], [`load_text_student`] for a text
    checkpoint), its classes from `init_kwargs` (`num_labels`,
    `id2label`), else from the training set's `ClassLabel` column; the other `init_kwargs` go to `from_pretrained`."""
    kwargs = dict(init_kwargs)
    id2label = kwargs.pop("id2label", None)
    num_labels = kwargs.pop("num_labels", None)
    kwargs.pop("label2id", None)
    if id2label is None:
        names = label_names_from_dataset(train_dataset)
        id2label = dict(enumerate(names)) if names else None
    id2label = {int(k): v for k, v in id2label.items()} if id2label else None
    num_labels = num_labels or (len(id2label) if id2label else None)
    if num_labels is None:
        raise ValueError(
            f"SmileTrainer cannot tell how many classes the new head of '{name_or_path}' needs: the training set "
            "has no `ClassLabel` label column. Pass `model_init_kwargs={'num_labels': N}` (and `id2label`) in "
            "SmileTrainingArguments, or a loaded model."
        )
    if is_text_checkpoint(name_or_path, **select_loading_kwargs(kwargs)):
        return load_text_student(name_or_path, num_labels, id2label=id2label, **kwargs)
    return load_student(name_or_path, num_labels, id2label=id2label, **kwargs)


def attach_source_head(model: PreTrainedModel, head: nn.Module) -> None:
    """Attach a trainable copy of the source head to the student (`smile_source_head`), so that the optimizer, DDP
    and checkpoints see it, and leave it out of every saved model (`_keys_to_ignore_on_save`)."""
    model.add_module(SOURCE_HEAD_NAME, head)
    hidden = {f"{SOURCE_HEAD_NAME}.{name}" for name in head.state_dict()}
    hide_from_save(model, hidden)


def reset_head(model: nn.Module) -> None:
    """Re-initialise the final linear classifier of `model` in place."""
    BackboneAdapter(model).head(model).reset_parameters()


def check_teacher_matches(adapter: BackboneAdapter, student: nn.Module, teacher: nn.Module) -> None:
    """Raise a clear error unless `teacher` has the student's backbone (same names and shapes)."""
    student_type = student.config.model_type
    teacher_type = getattr(getattr(teacher, "config", None), "model_type", None)
    if student_type != teacher_type:
        raise ValueError(
            f"The teacher (source model) is a '{teacher_type}' but the student is a '{student_type}': pass the "
            "pre-trained checkpoint the student was loaded from as `teacher_model`."
        )
    student_shapes = {n: p.shape for n, p in adapter.backbone_named_parameters(student)}
    teacher_shapes = {n: p.shape for n, p in adapter.backbone_named_parameters(teacher)}
    if student_shapes != teacher_shapes:
        diff = sorted(set(student_shapes.items()) ^ set(teacher_shapes.items()))[:3]
        raise ValueError(f"The teacher's backbone differs from the student's (e.g. {diff}): use the same checkpoint.")


def select_loading_kwargs(kwargs: dict | None) -> dict:
    """The [`LOADING_KWARGS`] among `kwargs`."""
    return {k: v for k, v in (kwargs or {}).items() if k in LOADING_KWARGS}


def load_image_processor(name_or_path: str | None, **kwargs):
    """The checkpoint's image processor, or None when it has none (or `name_or_path` is empty)."""
    return load_optional(AutoImageProcessor, "image processor", name_or_path, **kwargs)


def load_optional(auto_class, what: str, name_or_path: str | None, **kwargs):
    """`auto_class.from_pretrained(name_or_path)` (an image processor, a tokenizer) with the [`LOADING_KWARGS`] among
    `kwargs`, or None, with a line of log, when the checkpoint has none (or `name_or_path` is empty)."""
    if not name_or_path:
        return None
    try:
        return auto_class.from_pretrained(name_or_path, **select_loading_kwargs(kwargs))
    except (OSError, ValueError) as error:
        logger.info(f"No {what} loaded from {name_or_path}: {error}")
        return None


# ---- class names ----------------------------------------------------------------------------------------------------


def label_names_from_dataset(dataset, label_columns: Sequence[str] = ("labels", "label")) -> list[str] | None:
    """The class names of a `datasets` dataset whose label column is a `ClassLabel`, else None."""
    features = getattr(dataset, "features", None)
    if not features:
        return None
    for column in label_columns:
        names = getattr(features.get(column), "names", None)
        if names:
            return [str(name) for name in names]
    return None


def has_generic_labels(config) -> bool:
    """Whether `config.id2label` holds placeholder names (`LABEL_0`, `0`...) rather than class names."""
    return all(_GENERIC_LABEL.match(str(name)) for name in (getattr(config, "id2label", None) or {}).values())


def fill_label_names(config, names: Sequence[str] | None) -> bool:
    """Put `names` into `config.id2label` / `label2id` when the config only has placeholder names and the number of
    classes agrees. Returns whether the config was changed."""
    if not names or len(names) != config.num_labels or not has_generic_labels(config):
        return False
    if [config.id2label.get(i) for i in range(config.num_labels)] == list(names):
        return False  # already these names (digits are named "0".."9", which look like placeholders)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    return True


def resolve_source_model(
    method_name: str, adapter: BackboneAdapter, student: nn.Module, teacher_model: nn.Module | str | None, load_kwargs: dict
) -> nn.Module:
    """The pre-trained source model (with its original head) of `student`: `teacher_model`, loaded if it is a name,
    by default the checkpoint the student was loaded from (`name_or_path`); checked against the student's backbone
    (for a LoRA student, its frozen base must be the source's)."""
    if teacher_model is None:
        teacher_model = getattr(student, "name_or_path", "")
        if not teacher_model:
            raise ValueError(
                f"Method '{method_name}' needs the pre-trained source model (with its original head), but the "
                "student was not loaded from a checkpoint: pass `teacher_model=`."
            )
    if isinstance(teacher_model, str):
        loader = load_text_source_model if is_text_classifier(student) else load_source_model
        teacher_model = loader(teacher_model, **load_kwargs)
    check = check_base_is_source if peft_model_of(student) is not None else check_teacher_matches
    check(adapter, student, teacher_model)
    return teacher_model
