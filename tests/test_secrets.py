"""No Hub token in any file a run writes: a run that saves checkpoints, is resumed and pushes (to a stand-in for the
Hub) leaves neither `--token` nor `--hub_token` in any byte of its output folder or of what it uploaded, while the
tokens it was given stay in use (the uploads and the resume get them)."""

from __future__ import annotations

import copy
import io
import logging
import os
import pickle
import sys

import torch
import transformers.trainer

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf import run as run_smile

from .test_hub import FakeHub
from .test_run_reliability import tiny_argv

TOKEN = "hf_MODELtokenDoNotWrite0123456789"
HUB_TOKEN = "hf_HUBtokenDoNotWrite9876543210"


class RecordingHub(FakeHub):
    """[`FakeHub`] that also records the token of each call."""

    def __init__(self, root):
        super().__init__(root)
        self.tokens = []

    def create_repo(self, repo_id, token=None, **kwargs):
        self.tokens.append(token)
        return super().create_repo(repo_id, token=token, **kwargs)

    def upload_folder(self, *, token=None, **kwargs):
        self.tokens.append(token)
        return super().upload_folder(token=token, **kwargs)


def files_holding(folder, secrets: tuple[str, ...]) -> list[str]:
    """The files under `folder` whose bytes contain any of `secrets` (as written, UTF-8)."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            data = open(os.path.join(root, name), "rb").read()
            if any(secret.encode() in data for secret in secrets):
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return found


def test_no_token_in_any_file_of_a_saved_resumed_and_pushed_run(tmp_path, monkeypatch, caplog, capsys):
    hub = RecordingHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    resumed_from = []
    train = SmileTrainer.train

    def spy(self, resume_from_checkpoint=None, *args, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        assert self.args.model_init_kwargs["token"] == os.environ.get("HF_TOKEN_UNDER_TEST", TOKEN)  # kept in memory
        return train(self, resume_from_checkpoint, *args, **kwargs)

    monkeypatch.setattr(SmileTrainer, "train", spy)
    out = tmp_path / "run"
    push = ("--push_to_hub", "True", "--hub_model_id", "someone/secret-free", "--hub_token", HUB_TOKEN)
    caplog.set_level(logging.INFO)
    run_smile.main(tiny_argv(out, "--token", TOKEN, *push))
    # interrupted after its second checkpoint: the rerun resumes from it, with the token given again (another value)
    os.remove(out / "results.json")
    for name in ("checkpoint-3",):
        for root, dirs, names in os.walk(out / name, topdown=False):
            for n in names:
                os.remove(os.path.join(root, n))
            os.rmdir(root)
    other = TOKEN.replace("MODEL", "OTHER")
    monkeypatch.setenv("HF_TOKEN_UNDER_TEST", other)
    result = run_smile.main(tiny_argv(out, "--token", other, *push))
    assert resumed_from == [None, str(out / "checkpoint-2")] and result["global_step"] == 3

    secrets = (TOKEN, other, HUB_TOKEN)
    pickles = sorted(p.relative_to(out).as_posix() for p in out.rglob("training_args.bin"))
    assert pickles == ["checkpoint-1/training_args.bin", "checkpoint-2/training_args.bin",
                       "checkpoint-3/training_args.bin", "training_args.bin"]  # fmt: skip
    assert {"run_config.json", "results.json", "training_args.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert files_holding(out, secrets) == []
    assert hub.uploads and files_holding(tmp_path / "hub", secrets) == []
    assert set(hub.tokens) == {HUB_TOKEN}  # every create / upload used the token given
    logged = caplog.text + "".join(capsys.readouterr())
    assert not [secret for secret in secrets if secret in logged]
    saved = torch.load(out / "training_args.bin", weights_only=False)
    assert saved.hub_token is None and "token" not in saved.model_init_kwargs and saved.push_to_hub


def test_only_the_files_lose_the_tokens(tmp_path):
    args = SmileTrainingArguments(output_dir=str(tmp_path), hub_token=HUB_TOKEN, model_init_kwargs={"token": TOKEN},
                                  report_to="none", use_cpu=True)  # fmt: skip
    from smile_hf.config import secrets_left_out

    assert copy.deepcopy(args).hub_token == HUB_TOKEN and pickle.loads(pickle.dumps(args)).hub_token == HUB_TOKEN
    with secrets_left_out():
        buffer = io.BytesIO()
        torch.save(args, buffer)
    assert HUB_TOKEN.encode() not in buffer.getvalue() and TOKEN.encode() not in buffer.getvalue()
    assert args.hub_token == HUB_TOKEN and args.model_init_kwargs == {"token": TOKEN}
    # what TensorBoard and the other loggers record (to_sanitized_dict / to_json_string) is masked
    for text in (args.to_json_string(), str(args.to_sanitized_dict()), str(args.run_defining_values())):
        assert HUB_TOKEN not in text and TOKEN not in text




def test_the_lock_file_and_the_interrupt_line_show_no_token(tmp_path, monkeypatch):
    from smile_hf.cli import _interrupted
    from smile_hf.run.lock import output_dir_lock

    argv = ["--token", TOKEN, f"--hub_token={HUB_TOKEN}", "--hub_tok", HUB_TOKEN, "--max_steps", "3"]
    monkeypatch.setattr(sys, "argv", ["smile-hf", "train", *argv])
    with output_dir_lock(str(tmp_path)) as lock_file:
        written = open(lock_file, encoding="utf-8").read()
    assert "--max_steps 3" in written and TOKEN not in written and HUB_TOKEN not in written
    line = _interrupted(KeyboardInterrupt(), "smile-hf train", argv)
    assert line.endswith("--max_steps 3") and "--token '<TOKEN>'" in line
    assert TOKEN not in line and HUB_TOKEN not in line
