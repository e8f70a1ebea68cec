"""`--help` of the run scripts (`smile_hf.run`): a description, the options in groups in a fixed order, each default
as the script applies it, stated once, and parsing identical to the plain `HfArgumentParser` of the same
dataclasses."""

from __future__ import annotations

import re

import pytest
from transformers import HfArgumentParser

from smile_hf import SmileTrainingArguments
from smile_hf.run import DataTrainingArguments, ModelArguments, build_parser
from smile_hf.run import compare as compare_methods

RUN_GROUPS = [
    "options", "data (", "model (", "method (", "tuning (", "recipe (", "output (", "all Trainer options (",
]  # fmt: skip


def help_text(parser) -> str:
    return parser.format_help()


def group_titles(text: str) -> list[str]:
    """The section headings of a help text: unindented lines ending with ':' after the description's examples."""
    lines = text.split("\noptions:\n", 1)[1].splitlines()
    return ["options"] + [line for line in lines if line and not line[0].isspace() and line.endswith(":")]


def option_entries(text: str) -> dict[str, str]:
    """Option (its first spelling) -> its help, whitespace joined, from a formatted help."""
    entries, current = {}, None
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {name: " ".join(entry.split()) for name, entry in entries.items()}


@pytest.mark.parametrize("script", ["run_smile", "compare_methods"])
def test_groups_in_order_and_defaults_as_the_script_applies_them(script, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    parser = build_parser() if script == "run_smile" else compare_methods.build_parser()
    text = help_text(parser)
    expected = RUN_GROUPS if script == "run_smile" else RUN_GROUPS[:4] + ["comparison ("] + RUN_GROUPS[4:]
    titles = group_titles(text)
    assert len(titles) == len(expected) and all(t.startswith(e) for t, e in zip(titles, expected)), titles
    entries = option_entries(text)
    assert "(default: True;" in entries["--do_train"]  # the script trains; the dataclass default is False
    assert "runs/<dataset>-<method>-<model>" in entries["--output_dir"]
    assert "tensorboard when TensorBoard is installed" in entries["--report_to"]
    assert entries["--no_random_horizontal_flip"].endswith("Same as --random_horizontal_flip False.")
    assert entries["--learning_rate"].endswith("Default: 5e-05; with --reference_recipe: 0.01.")
    assert entries["--ema_decay"].endswith("(default: 0.999)")
    assert "(default: None)" not in text
    stated_twice = [name for name, entry in entries.items() if entry.lower().count("default:") > 1]
    assert stated_twice == []
    # every option is shown once, in exactly one group
    shown = [a for group in parser._action_groups for a in group._group_actions]
    assert sorted(map(id, shown)) == sorted(map(id, parser._actions))
    # groups hold the options of their dataclass: the method's hyperparameters, the recipe's fields
    method = next(g for g in parser._action_groups if g.title.startswith("method"))
    assert {"method", "reg_lambda", "l2sp_alpha", "cotuning_lambda"} <= {a.dest for a in method._group_actions}
    recipe = next(g for g in parser._action_groups if g.title.startswith("recipe"))
    assert recipe._group_actions[0].dest == "reference_recipe"
    if script == "compare_methods":
        assert "Run with no arguments, it is the offline demo" in text


@pytest.mark.parametrize("script", ["run_smile", "compare_methods"])
def test_parsing_is_that_of_the_plain_parser(script):
    """The regrouped parser has the plain `HfArgumentParser`'s actions, in the same order, with the same option
    strings, destinations, defaults, types and choices: only the help differs."""
    types = (ModelArguments, DataTrainingArguments, SmileTrainingArguments)
    if script == "compare_methods":
        types += (compare_methods.ExperimentArguments,)
    grouped = build_parser() if script == "run_smile" else compare_methods.build_parser()

    def signature(parser):
        return [(a.option_strings, a.dest, a.default, getattr(a.type, "__qualname__", a.type), a.nargs, a.const,
                 a.choices, a.required) for a in parser._actions]  # fmt: skip (choice types are new closures)

    assert signature(grouped) == signature(HfArgumentParser(types))
    argv = ["--dataset", "digits", "--no_random_horizontal_flip", "--learning_rate", "0.1", "--do_train", "False"]
    assert grouped.parse_args(argv) == HfArgumentParser(types).parse_args(argv)
