"""Stock fields that SmileTrainer hands on unchanged, each checked where it acts: the Hub options reach the Hub client,
`torch_compile_mode` reaches the teacher's compilation, `ignore_data_skip` resumes like the stock Trainer, and
`enable_jit_checkpoint` writes a complete checkpoint."""

from __future__ import annotations

import os
import signal

import safetensors.torch
import torch
import transformers as T
import transformers.trainer
from transformers import TrainerCallback

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.checkpoints import is_complete_checkpoint
from smile_hf.method_state import METHOD_STATE_NAME

from .test_hub import FakeHub, no_network  # noqa: F401  (no_network: fixture)
from .testing_utils import random_image_dataset, source_and_student, training_device_args


class RecordingHub(FakeHub):
    """The FakeHub of tests/test_hub.py, also recording the token and privacy of `create_repo` and `upload_folder`."""

    def __init__(self, root):
        super().__init__(root)
        self.calls = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", token, private))
        return super().create_repo(repo_id, token=token, private=private, exist_ok=exist_ok, **kwargs)

    def upload_folder(self, *, token=None, **kwargs):
        self.calls.append(("upload_folder", token, None))
        return super().upload_folder(token=token, **kwargs)


def test_hub_options_reach_the_hub_client(tmp_path, monkeypatch, no_network):  # noqa: F811
    hub = RecordingHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path / "run"), report_to="none", method="smile", max_steps=4, save_steps=2,
        per_device_train_batch_size=4, push_to_hub=True, hub_model_id="someone/tiny", hub_strategy="every_save",
        hub_token="hf_test_token", hub_private_repo=True, hub_revision="dev", hub_always_push=True,
        **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, teacher_model=source, args=args, train_dataset=random_image_dataset(16))
    trainer.train()
    assert ("create_repo", "hf_test_token", True) in hub.calls
    assert all(token == "hf_test_token" for kind, token, _ in hub.calls if kind == "upload_folder")
    assert hub.uploads and all(u["revision"] == "dev" for u in hub.uploads)
    assert len([u for u in hub.uploads if u["path_in_repo"] is None]) >= 2  # every save pushed (hub_always_push)


def test_torch_compile_mode_reaches_the_teachers_compilation(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: calls.append(kwargs))
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile", torch_compile=True, torch_compile_backend="eager",
        torch_compile_mode="max-autotune", **training_device_args(),
    )  # fmt: skip
    SmileTrainer(model=student, teacher_model=source, args=args)
    assert calls == [{"backend": "eager", "mode": "max-autotune"}]


def resumed_weights(trainer_class: str, output_dir, ignore_data_skip: bool) -> dict[str, torch.Tensor]:
    """Train 4 steps saving at step 2, then resume a new run from that checkpoint; the resumed run's weights."""
    weights = None
    for run, resume in (("first", None), ("second", str(output_dir / "first" / "checkpoint-2"))):
        _, student = source_and_student("vit")
        options = dict(
            output_dir=str(output_dir / run), report_to="none", max_steps=4, save_steps=2, per_device_train_batch_size=4,
            optim="sgd", learning_rate=0.1, ignore_data_skip=ignore_data_skip, seed=1, **training_device_args(),
        )  # fmt: skip
        if trainer_class == "stock":
            trainer = T.Trainer(model=student, args=T.TrainingArguments(**options, remove_unused_columns=False),
                                train_dataset=random_image_dataset(24))  # fmt: skip
        else:
            trainer = SmileTrainer(model=student, args=SmileTrainingArguments(**options, method="finetune"),
                                   train_dataset=random_image_dataset(24))  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        weights = student.state_dict()
    return weights


def test_ignore_data_skip_resumes_like_the_stock_trainer(tmp_path):
    ours = resumed_weights("smile", tmp_path / "smile", ignore_data_skip=True)
    stock = resumed_weights("stock", tmp_path / "stock", ignore_data_skip=True)
    for k, v in ours.items():  # the same float operations on the same batches
        torch.testing.assert_close(v, stock[k], rtol=1e-5, atol=1e-6, msg=k)
    skipping = resumed_weights("smile", tmp_path / "skip", ignore_data_skip=False)
    assert any(not torch.allclose(v, skipping[k]) for k, v in ours.items())  # the field changed which batches ran


class SigtermAtStep(TrainerCallback):
    """Sends this process SIGTERM (as a scheduler preempting the job does) at the end of step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_enable_jit_checkpoint_saves_a_complete_checkpoint_with_the_method_state_on_sigterm(tmp_path):
    """The stock just-in-time checkpoint (SIGTERM, then a 3 s grace period) goes through SmileTrainer's checkpoint
    save: the completion marker and the SMILE state are written, and the run resumes from it."""
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", method="smile", max_steps=100_000, save_strategy="no",
        per_device_train_batch_size=4, enable_jit_checkpoint=True, disable_tqdm=True, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, teacher_model=source, args=args, train_dataset=random_image_dataset(16),
                           callbacks=[SigtermAtStep(2)])  # fmt: skip
    trainer.train()
    (folder,) = [f for f in os.listdir(tmp_path) if f.startswith("checkpoint-")]
    checkpoint = os.path.join(str(tmp_path), folder)
    assert trainer.state.global_step < 100_000 and is_complete_checkpoint(checkpoint)
    assert METHOD_STATE_NAME in os.listdir(checkpoint)
    state = safetensors.torch.load_file(os.path.join(checkpoint, METHOD_STATE_NAME))
    # the EMA updates of the checkpoint's steps (one every `ema_update_every`); the run itself may take one more step
    # after the save before it stops, so its teacher is not the reference
    saved_step = int(folder.split("-")[1])
    assert int(state["teacher.num_updates"]) == saved_step // args.ema_update_every
