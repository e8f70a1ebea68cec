# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What [`SmileTrainer`] sets up differently for a text classifier: the default collator (dynamic padding by the
tokenizer), the default processing class (the checkpoint's tokenizer) and the source head, which a text checkpoint
may not have (a pre-training checkpoint: SMILE then trains without `L_aux`)."""

from __future__ import annotations

from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.utils import logging

from .backbones import TextBackboneAdapter, is_text_classifier
from .data import collate
from .modeling import load_image_processor, load_optional
from .text import has_classification_head

logger = logging.get_logger(__name__)


def text_data_collator(processing_class) -> DataCollatorWithPadding:
    """`DataCollatorWithPadding(tokenizer)`: dynamic padding of tokenized texts (the default collator of a text
    model); a one-line error without a tokenizer."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ValueError(
            "A text model's batches are padded by its tokenizer: pass `processing_class=tokenizer` (or "
            "`data_collator=DataCollatorWithPadding(tokenizer)`) to SmileTrainer."
        )
    return DataCollatorWithPadding(tokenizer)


def default_collator(adapter, processing_class):
    """The collator used when none is given: [`text_data_collator`] for a text model, [`smile_hf.data.collate`] for
    images."""
    return text_data_collator(processing_class) if isinstance(adapter, TextBackboneAdapter) else collate


def load_tokenizer(name_or_path: str | None, **kwargs):
    """The checkpoint's tokenizer, or None when it has none (or `name_or_path` is empty)."""
    return load_optional(AutoTokenizer, "tokenizer", name_or_path, **kwargs)


def load_processor(adapter):
    """The loader of the checkpoint's processing class: its tokenizer for a text model, else its image processor."""
    return load_tokenizer if isinstance(adapter, TextBackboneAdapter) else load_image_processor


def missing_processor_message(adapter, output_dir: str) -> str:
    """The warning of a model saved without a processing class: what its pipeline needs and how to pass it."""
    if isinstance(adapter, TextBackboneAdapter):
        return (
            f"No tokenizer saved in {output_dir}: `pipeline('text-classification')` needs one. Pass "
            "`processing_class=AutoTokenizer.from_pretrained(<pre-trained checkpoint>)` to SmileTrainer."
        )
    return (
        f"No image processor saved in {output_dir}: `pipeline('image-classification')` needs one. Pass "
        "`processing_class=AutoImageProcessor.from_pretrained(<pre-trained checkpoint>)` to SmileTrainer."
    )


def check_source_head(regularizer, source_model) -> bool:
    """Whether the source model has a trained classification head to copy (always, for images). A text checkpoint
    without one turns the source-head terms off, with one log line, for a method whose source head is optional
    (SMILE's `L_aux`), and is refused in one line for the others (Co-Tuning)."""
    if source_model is None or not is_text_classifier(source_model) or has_classification_head(source_model):
        return True
    architectures = ", ".join(source_model.config.architectures)
    if regularizer.source_head_optional:
        logger.warning(
            f"The source checkpoint ({architectures}) has no sequence-classification head: '{regularizer.name}' "
            "trains without its source-head term (L_aux is off)."
        )
        return False
    raise ValueError(
        f"Method '{regularizer.name}' needs the source checkpoint's trained classification head, but the checkpoint "
        f"is a {architectures} (no sequence-classification head): use a fine-tuned classifier as the source model, "
        "or another method."
    )
