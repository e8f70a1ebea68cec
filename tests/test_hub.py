"""Model card and push to the Hub, tested offline against a stand-in that records what would be uploaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil
import socket
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers.trainer
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoModelForImageClassification, HfArgumentParser, pipeline

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.checkpoints import is_complete_checkpoint
from smile_hf.method_state import METHOD_STATE_NAME
from smile_hf.methods import method_hyperparameters
from smile_hf.model_card import build_model_card, training_results
from smile_hf.modeling import fill_label_names

from .test_export import (  # noqa: F401  (one_thread: autouse fixture)
    CLASS_NAMES,
    assert_no_key_warnings,
    image_processor,
    images,
    labelled_dataset,
    one_thread,
    transformers_log,
)
from .testing_utils import script_device_args, source_and_student, training_device_args


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(sock, address, *args, **kwargs):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address, *args, **kwargs)
        raise AssertionError(f"network access attempted: {address}")

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


class FakeHub:
    """Stands in for the `HfApi` the Trainer uses (`transformers.trainer.hf_api()`): `create_repo` and
    `upload_folder` record their calls, and uploads copy the files the real client would send (same pattern
    filtering) into `root/<repo_id>/<path_in_repo>`. A README.md is parsed as a model card, as the Hub validates it."""

    def __init__(self, root: Path):
        self.root, self.repos, self.uploads = root, [], []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.repos.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, token=None, run_as_future=False,
                      ignore_patterns=None, allow_patterns=None, revision=None, path_in_repo=None, **kwargs):  # fmt: skip
        folder = Path(folder_path)
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        files = list(filter_repo_objects(local, allow_patterns=allow_patterns, ignore_patterns=ignore + DEFAULT_IGNORE_PATTERNS))
        if "README.md" in files:
            ModelCard((folder / "README.md").read_text(encoding="utf-8"))  # raises on invalid metadata
        target = self.root / repo_id / (path_in_repo or "")
        for rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / rel, target / rel)
        self.uploads.append({"message": commit_message, "path_in_repo": path_in_repo, "files": files, "revision": revision})
        if not run_as_future:
            return SimpleNamespace(commit_message=commit_message)
        future = Future()
        future.set_result(SimpleNamespace(commit_message=commit_message))
        return future


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def test_push_to_hub_uploads_a_clean_model_processor_and_card(tmp_path, monkeypatch, no_network, torch_device):
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    (args,) = HfArgumentParser(SmileTrainingArguments).parse_args_into_dataclasses(
        [
            "--output_dir", str(tmp_path / "run"), "--push_to_hub", "--hub_model_id", "someone/smile-tiny",
            "--hub_strategy", "checkpoint", "--method", "smile", "--max_steps", "4", "--eval_strategy", "steps",
            "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
            "--optim", "sgd", "--learning_rate", "0.1", "--ema_update_every", "1", "--report_to", "none",
            "--disable_tqdm", "true", *script_device_args(),
        ]
    )  # fmt: skip
    source, student = source_and_student("resnet")
    eval_dataset = labelled_dataset(12, seed=3)
    trainer = SmileTrainer(
        model=student, args=args, teacher_model=source, train_dataset=labelled_dataset(16), eval_dataset=eval_dataset,
        processing_class=image_processor(), compute_metrics=accuracy,
    )  # fmt: skip
    trainer.train()
    trainer.push_to_hub(dataset="Tiny Animals", dataset_tags="someone/tiny-animals", finetuned_from="someone/resnet-tiny")

    assert hub.repos == ["someone/smile-tiny"]
    final = hub.uploads[-1]
    assert final["message"] == "End of training" and final["path_in_repo"] is None
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(final["files"])
    assert not [f for f in final["files"] if f.startswith("checkpoint-") or f.endswith(METHOD_STATE_NAME)]
    # checkpoints went to last-checkpoint, each pushed only once complete (marker and SMILE state included)
    checkpoint_pushes = [u for u in hub.uploads if u["path_in_repo"] == "last-checkpoint"]
    assert len(checkpoint_pushes) == 2
    assert all({"checkpoint_complete.json", METHOD_STATE_NAME} <= set(u["files"]) for u in checkpoint_pushes)
    repo = tmp_path / "hub" / "someone" / "smile-tiny"
    assert is_complete_checkpoint(str(repo / "last-checkpoint"))

    # the uploaded folder is a plain, clean image classifier with its processor
    with transformers_log() as log:
        model = AutoModelForImageClassification.from_pretrained(str(repo)).to(torch_device).eval()
        classifier = pipeline("image-classification", model=str(repo), device=torch_device)
    assert_no_key_warnings(log.getvalue())
    assert model.config.id2label == dict(enumerate(CLASS_NAMES))
    assert {p["label"] for p in classifier(images(1)[0], top_k=3)} == set(CLASS_NAMES)

    # the card parses and gives back the evaluation results, which match an independent evaluation of the upload
    card = ModelCard.load(repo / "README.md")
    batch = eval_dataset[:]
    with torch.no_grad():
        predictions = model(batch["pixel_values"].to(torch_device)).logits.argmax(-1)
    independent_accuracy = (predictions.cpu() == batch["labels"]).float().mean().item()
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == pytest.approx(independent_accuracy, abs=1e-6)
    assert results["accuracy"].task_type == "image-classification"
    assert results["accuracy"].dataset_type == "someone/tiny-animals"
    assert results["accuracy"].dataset_name == "Tiny Animals"
    assert "loss" not in results  # the evaluation loss is no metric of the model (the card's history shows it)
    assert card.data.model_name == "smile-tiny"
    assert card.data.base_model == "someone/resnet-tiny"
    assert card.data.datasets == ["someone/tiny-animals"]
    assert card.data.pipeline_tag == "image-classification" and "smile_hf" in card.data.tags
    metadata = yaml.safe_load(card.content.split("---")[1])
    assert metadata["model-index"][0]["results"][0]["metrics"]
    for text in ("arXiv:2103.13941", "reg_lambda", "ema_decay", "loss_reg", "loss_aux", "Intended uses", "Limitations"):
        assert text in card.text, text


def test_card_from_pieces_round_trips(tmp_path):
    log_history = [
        {"loss": 2.0, "loss_main": 1.5, "loss_aux": 3.0, "loss_reg": 0.7, "loss_cls": 1.9, "step": 1, "epoch": 0.5},
        {"loss": 1.0, "loss_main": 0.9, "loss_cls": 1.8, "step": 2, "epoch": 1.0},
        {"eval_loss": 0.8, "eval_accuracy": 0.75, "eval_runtime": 0.1, "eval_samples_per_second": 9.0, "step": 2, "epoch": 1.0},
        {"train_runtime": 1.0, "train_loss": 1.5, "step": 2, "epoch": 1.0},
    ]  # fmt: skip
    results = training_results(log_history)
    assert list(results.eval_metrics.items()) == [("accuracy", 0.75), ("loss", 0.8)] and results.eval_step == 2
    assert results.loss_terms == {"loss_main": (0.9, 2), "loss_aux": (3.0, 1), "loss_reg": (0.7, 1), "loss_cls": (1.8, 2)}
    assert results.history_columns == ["Step", "Epoch", "Training loss", "Validation accuracy", "Validation loss"]
    assert results.history_rows == [["2", "1", "1", "0.75", "0.8"]]

    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(), method="smile")
    hyper = method_hyperparameters(args)
    assert hyper["reg_lambda"] == 0.01 and hyper["ema_decay"] == 0.999 and hyper["mixup_alpha"] == 0.2
    assert not any(k.startswith(("l2sp", "delta", "bss", "cutmix")) for k in hyper)

    card = build_model_card(model_name="m", method="smile", method_hyperparameters=hyper, results=results,
                            base_model=str(tmp_path), dataset_name="My Data", labels=["x", "y"])  # fmt: skip
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert {r.metric_type: r.metric_value for r in loaded.data.eval_results} == {"accuracy": 0.75}
    assert loaded.data.base_model is None  # a local folder is not a Hub id, and its path is not published
    assert str(tmp_path) not in loaded.text and f"`{tmp_path.name}`" in loaded.text
    assert "| `loss_aux` | 3 | 1 |" in loaded.text and "x, y" in loaded.text


def test_method_hyperparameters_follow_the_method(tmp_path):
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(), method="finetune+cutmix")
    assert method_hyperparameters(args) == {"method": "finetune+cutmix", "cutmix_alpha": 1.0}
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", **training_device_args(), method="finetune")
    assert method_hyperparameters(args) == {"method": "finetune"}


def test_label_names_only_replace_placeholders():
    config = SimpleNamespace(num_labels=2, id2label={0: "LABEL_0", 1: "LABEL_1"}, label2id={})
    assert fill_label_names(config, ["no", "yes"]) and config.id2label == {0: "no", 1: "yes"}
    assert config.label2id == {"no": 0, "yes": 1}
    assert not fill_label_names(config, ["a", "b"]) and config.id2label == {0: "no", 1: "yes"}
    config = SimpleNamespace(num_labels=2, id2label={0: "0", 1: "1"}, label2id={})
    assert not fill_label_names(config, ["a", "b", "c"])  # wrong number of classes
