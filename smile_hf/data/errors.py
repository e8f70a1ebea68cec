# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What every part of `smile_hf.data` raises: [`DataError`], a one-line message meant for the user, and the helper
that shortens a library's exception to one such line."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data (unknown dataset, missing columns, labels out of range, empty folder, corrupt image...).

    The message is one line, meant to be shown to the user as is.
    """


def one_line(error: BaseException) -> str:
    """`error` as one line, `Type: message`, cut at 300 characters (to end a [`DataError`] message)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"
