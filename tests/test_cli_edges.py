"""The edges of the command line, each one line on stderr with no traceback: `--push_to_hub` with no Hub, a missing
local checkpoint, refused and internal options, Ctrl-C and SIGTERM (naming the checkpoint to resume from and the
command); and `smile-hf --help` without torch."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import Future

import pytest
import requests
import transformers.trainer

from smile_hf.checkpoints import get_last_checkpoint, list_checkpoints
from smile_hf.cli import run_cli
from smile_hf.run import build_parser
from smile_hf.run import compare as compare_methods
from smile_hf.run import main as run_main
from smile_hf.run.lock import LOCK_NAME

from .test_hub import FakeHub
from .test_run_reliability import tiny_argv
from .testing_utils import subprocess_env

ENV = subprocess_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def smile_hf(*argv, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smile_hf.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The only line of stderr that reports an error (there must be exactly one, and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert result.returncode == code and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_help_prints_without_importing_torch():
    code = ("import sys; from smile_hf.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("usage: smile-hf {train,compare,export}")
    assert result.stdout.splitlines()[-1] == "[]"


def test_push_to_hub_without_a_hub_is_one_line_before_training(tmp_path):
    out = tmp_path / "run"
    line = one_error_line(smile_hf("train", *tiny_argv(out, "--push_to_hub", "True")))
    assert line.startswith("smile-hf train: error: --push_to_hub: cannot create the Hub repository 'run': offline "
                           "(HF_HUB_OFFLINE=1) [OfflineModeIsEnabled: ")  # fmt: skip
    assert "model_name_or_path" not in line and not out.exists()  # the source model is not blamed; nothing trained
    unreachable = subprocess_env(HF_ENDPOINT="http://127.0.0.1:9", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="0")
    line = one_error_line(smile_hf("train", *tiny_argv(out, "--push_to_hub", "True"), env=unreachable))
    assert "cannot create the Hub repository 'run': the Hub cannot be reached, or refused it [" in line


@pytest.mark.parametrize("path", ["./no/such/model", "{tmp}/missing", "{tmp}"])
def test_a_missing_local_checkpoint_is_named_as_missing(tmp_path, path):
    path = path.format(tmp=tmp_path / "parent") if path != "{tmp}" else str(tmp_path / "sub")  # sub: parent exists
    line = one_error_line(smile_hf("train", *tiny_argv(tmp_path / "run", "--model_name_or_path", path)))
    assert line.startswith(f"smile-hf train: error: --model_name_or_path '{path}' does not exist: no such folder")
    assert "hf download" not in line


def test_refused_and_internal_options_are_one_line(tmp_path):
    line = one_error_line(smile_hf("train", *tiny_argv(tmp_path, "--fsdp", "full_shard", "--method", "delta")))
    assert line.startswith("smile-hf train: error: Method 'delta' cannot be trained under FSDP2")
    for option in ("--reference_recipe_applied", "--reference_recipe_app"):  # argparse's abbreviations too
        line = one_error_line(smile_hf("train", *tiny_argv(tmp_path, option, "{}")))
        assert line == "smile-hf train: error: --reference_recipe_applied is recorded by a run itself, not an option: drop it."
    for parser in (build_parser(), compare_methods.build_parser()):
        assert "reference_recipe_applied" not in parser.format_help()


def interrupt_once_saved(out, signum: int, *extra) -> subprocess.CompletedProcess:
    """A long `smile-hf train` run, sent `signum` once its second checkpoint is complete."""
    argv = tiny_argv(out, "--max_steps", "100000", *extra)
    run = subprocess.Popen([sys.executable, "-m", "smile_hf.cli", "train", *argv], env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    while run.poll() is None and get_last_checkpoint(str(out)) in (None, str(out / "checkpoint-1")):
        time.sleep(0.2)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=600)
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr), argv


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_names_the_checkpoint_to_resume_from_and_the_command(tmp_path, signum, code):
    out = tmp_path / "run"
    result, argv = interrupt_once_saved(out, signum)
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = get_last_checkpoint(str(out))  # the newest complete checkpoint, read after the process ended
    assert last is not None and len(list_checkpoints(str(out))) >= 2
    assert result.stderr.splitlines()[-1] == (
        f"smile-hf train: interrupted ({signal.Signals(signum).name}): rerun the same command to resume from {last}: "
        "smile-hf train " + " ".join(argv)
    )
    assert not (out / LOCK_NAME).exists()  # the run's cleanup ran: its lock is released


class GoneHub(FakeHub):
    """The Hub of a run that could create its repository, then went away: every upload fails (a checkpoint's in its
    future, as the real client's background uploads do; the final one when called), and the final call is recorded."""

    def __init__(self, root):
        super().__init__(root)
        self.final = None

    def upload_folder(self, *, run_as_future=False, **kwargs):
        error = requests.exceptions.ConnectionError("Max retries exceeded with url: /api/models (Connection refused)")
        if run_as_future:
            future = Future()
            future.set_exception(error)
            return future
        self.final = kwargs
        raise error


def test_a_failed_final_push_is_one_line_naming_the_saved_folder_and_the_command(tmp_path, monkeypatch, capsys):
    hub = GoneHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    out = tmp_path / "run"
    argv = tiny_argv(out, "--push_to_hub", "True", "--hub_model_id", "someone/tiny")
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: run_main(argv), "smile-hf train", argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and re.match(  # (the tests run with HF_HUB_OFFLINE=1, which the message names)
        r"smile-hf train: error: --push_to_hub: the upload to the Hub repository 'someone/tiny' failed: (offline "
        r"\(HF_HUB_OFFLINE=1\)|the Hub cannot be reached, or refused it) \[ConnectionError: Max retries exceeded",
        lines[0],
    ), err[-3000:]
    assert set(hub.repos) == {"someone/tiny"} and hub.final is not None  # created at the start; the final push tried
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()  # saved locally, card included
    command = shlex.split(lines[0].split("push it later with `", 1)[1].rstrip("`."))
    # the command uploads what the final push would have: the same repository, folder and left-out files
    assert command[:5] == ["hf", "upload", "someone/tiny", str(out.resolve()), "."]
    assert os.path.samefile(command[3], hub.final["folder_path"]) and hub.final["repo_id"] == "someone/tiny"
    excluded = [a.removeprefix("--exclude=") for a in command[5:] if a.startswith("--exclude=")]
    assert excluded == list(hub.final["ignore_patterns"])
