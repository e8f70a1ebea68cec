"""The SmileTrainer page of the docs (`docs/trainer.md`) names every `Trainer` member that `SmileTrainer` overrides,
and only those: the list read from the page against the members found by walking the class's MRO."""

from __future__ import annotations

import os
import re

import transformers

from smile_hf import SmileTrainer

PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "trainer.md")


def overridden_members() -> set[str]:
    """Names defined by `SmileTrainer` or one of its mixins (the classes before `Trainer` in the MRO) that are
    also `Trainer` members."""
    stock = transformers.Trainer
    names = set()
    for cls in SmileTrainer.__mro__:
        if cls is stock or issubclass(stock, cls):
            break
        names |= {n for n, v in vars(cls).items() if callable(v) and hasattr(stock, n)}
    return names


def page_members() -> set[str]:
    text = open(PAGE, encoding="utf-8").read()
    sentence = re.search(r"It overrides these `Trainer`\s+members:(.*?)\n- ", text, re.S)
    assert sentence, "the override sentence of docs/trainer.md is missing"
    return {name for name in re.findall(r"`([A-Za-z_]\w*)`", sentence.group(1))}


def test_docs_list_the_overridden_trainer_members():
    found = overridden_members()
    assert {"compute_loss", "train", "save_model"} <= found  # the walk does find overrides
    assert page_members() == found
