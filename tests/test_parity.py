"""The audit of smile_hf/parity.py: every `TrainingArguments` field and `Trainer.__init__` argument of the installed
transformers is classified (works with a test, irrelevant with a reason, or refused in one line)."""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path

import pytest
import transformers as T

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.parity import IRRELEVANT, REFUSED, TRAINER_ARGUMENTS, TRAINING_ARGUMENTS, WORKS, unclassified

from .testing_utils import source_and_student, training_device_args

REPO_ROOT = Path(__file__).resolve().parents[1]
REFUSED_VALUES = {
    "use_liger_kernel": True, "neftune_noise_alpha": 5.0, "auto_find_batch_size": True, "parallelism_config": object(),
}  # fmt: skip
"""A value other than the stock default for each refused field."""


def test_every_field_and_argument_of_the_installed_transformers_is_classified():
    problems = unclassified()
    assert not problems, "\n".join(problems)


def test_an_unclassified_field_fails_the_audit_with_where_to_classify_it():
    @dataclasses.dataclass
    class NextReleaseArguments(T.TrainingArguments):
        shiny_new_option: bool = False

    class NextReleaseTrainer(T.Trainer):
        def __init__(self, model=None, args=None, shiny_new_callable=None, **kwargs):
            super().__init__(model=model, args=args, **kwargs)

    problems = unclassified(NextReleaseArguments, NextReleaseTrainer)
    assert len(problems) == 2
    assert "'shiny_new_option'" in problems[0] and "smile_hf/parity.py TRAINING_ARGUMENTS" in problems[0]
    assert "'shiny_new_callable'" in problems[1] and "smile_hf/parity.py TRAINER_ARGUMENTS" in problems[1]
    assert all("works (with its test), irrelevant (with the reason) or refused" in p for p in problems)


@pytest.mark.parametrize("table", [TRAINING_ARGUMENTS, TRAINER_ARGUMENTS], ids=["fields", "arguments"])
def test_each_entry_has_a_status_and_a_works_entry_names_a_test_that_uses_it(table):
    installed = {f.name for f in dataclasses.fields(T.TrainingArguments)}
    installed |= set(inspect.signature(T.Trainer.__init__).parameters)
    for name, (status, note) in table.items():
        assert status in (WORKS, IRRELEVANT, REFUSED), name
        assert note and "\n" not in note, name
        if status != WORKS or name not in installed:
            continue
        path = REPO_ROOT / note.split()[0]
        assert path.is_file() and path.name.startswith(("test_", "conftest")), f"{name}: {note}"
        assert name in path.read_text(encoding="utf-8"), f"{name} is not used in {path.name}"


@pytest.mark.parametrize("name", sorted(REFUSED_VALUES))
def test_each_refused_field_is_refused_in_one_line_naming_it(name):
    assert TRAINING_ARGUMENTS[name][0] == REFUSED
    if name not in {f.name for f in dataclasses.fields(T.TrainingArguments)}:
        pytest.skip(f"{name} is not a field of transformers {T.__version__}")
    with pytest.raises(ValueError, match=f"does not support `{name}=") as error:
        SmileTrainingArguments(output_dir="unused", report_to="none", **{name: REFUSED_VALUES[name]})
    assert "\n" not in str(error.value)


def test_every_refused_field_has_a_test_value():
    refused = {n for n, (s, _) in TRAINING_ARGUMENTS.items() if s == REFUSED}
    assert refused == set(REFUSED_VALUES)


def test_a_refused_field_set_after_construction_is_refused_by_the_trainer(tmp_path):
    """A field set on built arguments (as `hyperparameter_search` does) is checked again when training starts."""
    _, student = source_and_student("resnet")
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", method="finetune", **training_device_args())
    args.auto_find_batch_size = True
    with pytest.raises(ValueError, match="does not support `auto_find_batch_size=True`"):
        SmileTrainer(model=student, args=args)


def test_the_parity_page_links_the_classification():
    page = (REPO_ROOT / "docs" / "parity.md").read_text(encoding="utf-8")
    assert "smile_hf/parity.py" in page
    for name, (status, _) in TRAINING_ARGUMENTS.items():
        if status == REFUSED:
            assert f"`{name}`" in page, f"docs/parity.md does not list the refused field {name}"
    assert os.path.isfile(REPO_ROOT / "smile_hf" / "parity.py")
