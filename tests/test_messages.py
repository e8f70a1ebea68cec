"""Errors that name their real cause, in one line: a checkpoint that needs its own code names --trust_remote_code, a
full disk names the folder being written and how to resume (the earlier checkpoints intact)."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import safetensors.torch

from smile_hf import run as run_smile
from smile_hf.checkpoints import DiskFullError, is_complete_checkpoint
from smile_hf.cli import run_cli

from .test_run_reliability import REPO_ROOT, resumes, tiny_argv  # noqa: F401  (resumes: a fixture)


def test_a_checkpoint_with_its_own_code_names_trust_remote_code(tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny", custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="my_own_net", auto_map={"AutoConfig": "modeling_mine.MyConfig",
                                                     "AutoModelForImageClassification": "modeling_mine.MyModel"})  # fmt: skip
    (custom / "config.json").write_text(json.dumps(config))
    expected = rf"^--model_name_or_path '{custom}' needs its own model code .*--trust_remote_code True"
    with pytest.raises(run_smile.InputError, match=expected):
        run_smile.main(tiny_argv(tmp_path / "run", "--model_name_or_path", str(custom)))
    with pytest.raises(run_smile.InputError, match=expected):  # evaluation only: the trained model is loaded at once
        run_smile.main(tiny_argv(tmp_path / "eval", "--model_name_or_path", str(custom), "--do_train", "False",
                                 "--do_eval", "True"))  # fmt: skip
    assert not (custom / "modeling_mine.py").exists()  # no code was there to run, and none was fetched


def test_a_full_disk_names_the_folder_and_how_to_resume(tmp_path, monkeypatch, resumes, capsys):  # noqa: F811
    out = tmp_path / "run"
    save_file = safetensors.torch.save_file

    def fills_up_in_checkpoint_2(tensors, path, *args, **kwargs):
        if "checkpoint-2" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up_in_checkpoint_2)
    with pytest.raises(DiskFullError) as error:
        run_smile.main(tiny_argv(out))
    assert str(error.value) == (
        f"No space left on the device while writing {out / 'checkpoint-2'}: the earlier checkpoints are intact. Free "
        f"some space (or lower --save_total_limit) and rerun the same command: it resumes from {out / 'checkpoint-1'}."
    )
    assert is_complete_checkpoint(str(out / "checkpoint-1")) and not is_complete_checkpoint(str(out / "checkpoint-2"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # on the command line: that one line, exit status 1
        run_cli(lambda: (_ for _ in ()).throw(error.value), "smile-hf train")
    assert exit_info.value.code == 1 and capsys.readouterr().err == f"smile-hf train: error: {error.value}\n"
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    assert run_smile.main(tiny_argv(out))["global_step"] == 3
    assert resumes == [None, str(out / "checkpoint-1")]


def test_a_full_disk_outside_a_save_is_one_line_too(capsys):
    def fails():
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/results.json")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(fails, "smile-hf train", [])
    assert exit_info.value.code == 1 and capsys.readouterr().err == (
        "smile-hf train: error: No space left on the device while writing /somewhere/results.json: free some space "
        "and rerun the same command (it resumes from the last complete checkpoint).\n"
    )
