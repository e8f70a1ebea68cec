# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The `smile-hf` command: `smile-hf train ...` is one run, with the full driver
([`smile_hf.run`]; `examples/run_smile.py` is the short script of the same run), `smile-hf compare ...` is
`examples/compare_methods.py ...` (several methods over seeds; no argument: the offline demo), `smile-hf export
RUN_DIR --format onnx` writes `model.onnx` beside a saved model ([`smile_hf.onnx_export`]). Also
`python -m smile_hf.cli train ...`.

Bad input is one `<command>: error: ...` line on stderr (exit status 2), a diverged run or a full disk one such line
(exit status 1), never a traceback; Ctrl-C and SIGTERM one line naming the checkpoint to resume from and the command
(exit status 130 and 143); with several processes every rank exits cleanly. `smile-hf --help` imports no torch.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence

COMMANDS = {
    "train": "one run (the full driver; examples/run_smile.py is its short script)",
    "compare": "several methods over seeds (examples/compare_methods.py)",
    "export": "a saved model to ONNX (smile-hf export RUN_DIR --format onnx [--quantize int8])",
}
USAGE = "usage: smile-hf {train,compare,export} [ARGUMENTS...]   (smile-hf train --help: every option)\n" + "\n".join(
    f"  {name:8} {what}" for name, what in COMMANDS.items()
)


def user_errors() -> tuple[type[Exception], ...]:
    """Bad input, reported as one `<script>: error: ...` line on stderr (exit status 2) instead of a traceback."""
    from .backbones import UnsupportedBackboneError
    from .checkpoints import IncompleteCheckpointError, OutputDirError
    from .data import DataError
    from .onnx_export import OnnxExportError
    from .run.arguments import InputError

    return DataError, InputError, UnsupportedBackboneError, IncompleteCheckpointError, OutputDirError, OnnxExportError


def run_errors() -> tuple[type[Exception], ...]:
    """A run that failed (it diverged, the disk filled up, or its final upload to the Hub failed), reported as one line
    on stderr with exit status 1."""
    from .checkpoints import DiskFullError
    from .guard import NonFiniteLossError, NonFiniteWeightsError
    from .run.outputs import HubPushError

    return NonFiniteLossError, NonFiniteWeightsError, DiskFullError, HubPushError


def _interrupted(interrupt: KeyboardInterrupt, script: str, argv: Sequence[str]) -> str:
    """The one line of an interrupted run: the signal, the checkpoint its rerun resumes from and the command."""
    from .checkpoints import RunInterrupted
    from .run.arguments import redact_tokens

    cause = interrupt.__context__ if isinstance(interrupt, RunInterrupted) else interrupt
    name = str(cause.args[0]) if cause is not None and cause.args and str(cause.args[0]).startswith("SIG") else "SIGINT"
    hint = interrupt.resume_hint() if isinstance(interrupt, RunInterrupted) else "rerun the same command to resume"
    return f"{script}: interrupted ({name}): {hint}: {' '.join([script, *map(shlex.quote, redact_tokens(argv))])}"


def run_cli(main_fn: Callable[[], object], script: str, argv: Sequence[str] | None = None) -> None:
    """Run a script's `main_fn`: bad input is one `<script>: error: ...` line (exit status 2), a diverged run one
    such line (exit status 1); Ctrl-C and SIGTERM one line naming the checkpoint to resume from and the command
    (`script` and `argv`, default `sys.argv[1:]`; exit status 130 and 143); with several processes every rank exits
    cleanly."""
    from .distributed import shutdown
    from .interrupts import handled_interrupts

    argv = sys.argv[1:] if argv is None else argv
    try:
        with handled_interrupts():  # SIGTERM (a scheduler, `kill`) stops the run as Ctrl-C does; neither is lost
            main_fn()
    except KeyboardInterrupt as interrupt:
        line = _interrupted(interrupt, script, argv)
        print(line, file=sys.stderr)
        sys.exit(143 if "(SIGTERM)" in line else 130)
    except Exception as error:
        if isinstance(error, user_errors()):
            print(f"{script}: error: {error}", file=sys.stderr)
            sys.exit(2)
        if isinstance(error, run_errors()):
            print(f"{script}: error: {error}", file=sys.stderr)
            sys.exit(1)
        from .checkpoints import NO_SPACE_ERRNOS

        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:  # outside a save (a log, the results)
            print(f"{script}: error: No space left on the device while writing {error.filename or 'a file'}: free "
                  "some space and rerun the same command (it resumes from the last complete checkpoint).",
                  file=sys.stderr)  # fmt: skip
            sys.exit(1)
        raise
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
    elif command == "export":
        from .onnx_export import main as command_main
    else:
        from .run.compare import main as command_main
    run_cli(lambda: command_main(rest, prog=f"smile-hf {command}"), f"smile-hf {command}", rest)


if __name__ == "__main__":
    main()
