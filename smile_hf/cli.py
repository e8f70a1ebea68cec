# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The `smile-hf` command: `smile-hf train ...` is one run, with the full driver
([`smile_hf.run`]; `examples/run_smile.py` is the short script of the same run), `smile-hf compare ...` is
`examples/compare_methods.py ...` (several methods over seeds; no argument: the offline demo). Also
`python -m smile_hf.cli train ...`.

Bad input is one `<command>: error: ...` line on stderr (exit status 2), a diverged run one such line (exit status 1),
never a traceback; with several processes every rank exits cleanly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .backbones import UnsupportedBackboneError
from .checkpoints import DiskFullError, IncompleteCheckpointError, OutputDirError
from .data import DataError
from .distributed import shutdown
from .guard import NonFiniteLossError, NonFiniteWeightsError
from .run.arguments import InputError

USER_ERRORS = (DataError, InputError, UnsupportedBackboneError, IncompleteCheckpointError, OutputDirError)
"""Bad input, reported as one `<script>: error: ...` line on stderr (exit status 2) instead of a traceback."""
RUN_ERRORS = (NonFiniteLossError, NonFiniteWeightsError, DiskFullError)
"""A run that failed (it diverged, or the disk filled up), reported as one line on stderr with exit status 1."""

COMMANDS = {
    "train": "one run (the full driver; examples/run_smile.py is its short script)",
    "compare": "several methods over seeds (examples/compare_methods.py)",
}
USAGE = "usage: smile-hf {train,compare} [ARGUMENTS...]   (smile-hf train --help: every option)\n" + "\n".join(
    f"  {name:8} {what}" for name, what in COMMANDS.items()
)


def run_cli(main_fn: Callable[[], object], script: str) -> None:
    """Run a script's `main_fn`: bad input is one `<script>: error: ...` line (exit status 2), a diverged run one
    such line (exit status 1); with several processes every rank exits cleanly."""
    try:
        main_fn()
    except USER_ERRORS as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except RUN_ERRORS as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutdown()


def main(argv: list[str] | None = None) -> None:
    """`smile-hf COMMAND ARGUMENTS...`: run the driver of `COMMAND` on `ARGUMENTS` (see [`COMMANDS`])."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        stream = sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr
        print(USAGE, file=stream)
        sys.exit(0 if stream is sys.stdout else 2)
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .run.driver import main as command_main
    else:
        from .run.compare import main as command_main
    run_cli(lambda: command_main(rest, prog=f"smile-hf {command}"), f"smile-hf {command}")


if __name__ == "__main__":
    main()
