# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The declaration of a regulariser's hyperparameter, and what is derived from it.

A regulariser declares each of its hyperparameters once, as a [`HyperParameter`] in its class attribute
`hyperparameters`. From that one declaration come:

- the `SmileTrainingArguments` field and its command-line flag ([`HyperParameter.as_field`]),
- the check of a value and its one-line error ([`HyperParameter.check`]),
- the line of the model card (`smile_hf.methods.method_hyperparameters`),
- the default search space of a hyperparameter search ([`HyperParameter.search_dimension`]).

This module imports neither torch nor any regulariser, so that the declarations can be read on their own.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclass(frozen=True)
class HyperParameter:
    """One hyperparameter of a regulariser.

    Attributes:
        name (`str`): the name of the `SmileTrainingArguments` field, the command-line flag (`--<name>`) and the
            keyword argument of the regulariser's constructor.
        default: the default value (the paper's or the reference implementation's).
        help (`str`): one line for `--help`; by convention it starts with the regulariser's title ("SMILE: ...").
        type (`type`): `float`, `int`, `bool` or `str`.
        low / high (*optional*): the valid range; `None` leaves that side open.
        low_open / high_open (`bool`, defaults to `False`): whether `low` / `high` themselves are excluded.
        choices (`tuple`, *optional*): the valid values, for a `str` hyperparameter.
        search (`tuple`, *optional*): the default search range `(low, high)` of a number, or the values to try of a
            `bool` or `str`; `None` leaves the hyperparameter out of the default search space.
        log (`bool`, defaults to `False`): search the range on a log scale.
        doc (`str`, *optional*): the longer description of the arguments' docstring (defaults to `help`).
        reference (`str`, *optional*): where the default comes from (paper, reference code).
    """

    name: str
    default: Any
    help: str
    type: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    search: tuple | None = None
    log: bool = False
    doc: str = ""
    reference: str = ""

    def __post_init__(self):
        if self.type not in _TYPE_NAMES:
            raise TypeError(f"HyperParameter `{self.name}`: type must be one of {list(_TYPE_NAMES)}, got {self.type}.")
        if not self.name.isidentifier():
            raise ValueError(f"HyperParameter name {self.name!r} is not a Python identifier (it is a keyword argument).")
        self.check(self.default)

    @property
    def valid_range(self) -> str | None:
        """The valid range as text: `>= 0`, `in [0, 1)`..., or None when any value of the type is valid."""
        if self.low is None and self.high is None:
            return None
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"

    def check(self, value: Any) -> None:
        """Raise a one-line `ValueError` naming the hyperparameter when `value` is not a valid value of it."""
        if not self._has_type(value):
            raise ValueError(f"`{self.name}` must be a {_TYPE_NAMES[self.type]}, got {value!r}.")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"`{self.name}` must be one of {self.choices}, got '{value}'.")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise ValueError(f"`{self.name}` must be {self.valid_range}, got {value}.")

    def _has_type(self, value: Any) -> bool:
        if self.type is bool:
            return isinstance(value, bool)
        if self.type is int:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if self.type is float:
            return isinstance(value, numbers.Real) and not isinstance(value, bool)
        return isinstance(value, str)

    def as_field(self) -> dataclasses.Field:
        """The dataclass field of `SmileTrainingArguments` (`HfArgumentParser` reads `help` and `choices`)."""
        metadata = {"help": self.help}
        if self.choices is not None:
            metadata["choices"] = list(self.choices)
        return dataclasses.field(default=self.default, metadata=metadata)

    @property
    def annotation(self) -> str:
        """The type of the field, as the name of a builtin (resolved by `typing.get_type_hints`)."""
        return _TYPE_NAMES[self.type]

    def search_dimension(self) -> dict[str, Any] | None:
        """The default search space of this hyperparameter, free of any tuning library: `{"type": "float" | "int",
        "low", "high", "log"}` for a number, `{"type": "categorical", "choices": [...]}` for a bool or a str; None
        when the declaration has no `search`."""
        if self.search is None:
            return None
        if self.type in (bool, str):
            return {"type": "categorical", "choices": list(self.search)}
        low, high = self.search
        return {"type": _TYPE_NAMES[self.type], "low": low, "high": high, "log": self.log}

    def docstring(self) -> str:
        """The entry of the arguments' docstring, in the Hugging Face style (with where the default comes from)."""
        source = f" Default from: {self.reference}." if self.reference else ""
        return f"{self.name} (`{_TYPE_NAMES[self.type]}`, *optional*, defaults to `{self.default!r}`):\n    {self.doc or self.help}{source}"


def resolve_values(declared: tuple[HyperParameter, ...], values: dict[str, Any], owner: str) -> dict[str, Any]:
    """The value of every declared hyperparameter: the one given in `values`, else its default; each checked.
    Raises a one-line `TypeError` for a name `owner` does not declare."""
    known = {h.name: h for h in declared}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"{owner} has no hyperparameter {unknown[0]!r}; its hyperparameters: {sorted(known) or 'none'}.")
    resolved = {}
    for name, hyperparameter in known.items():
        value = values.get(name, hyperparameter.default)
        hyperparameter.check(value)
        resolved[name] = value
    return resolved
