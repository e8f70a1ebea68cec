"""What a text run leaves and publishes: its model card (task, auto class, usage, words about texts), `--push_to_hub`
against a stand-in Hub (tokenizer files uploaded), and the image-only tools refusing a text model in one line (ONNX
export, the linearity analysis, `unlabeled_dataset`)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers.trainer
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from smile_hf import SmileTrainer
from smile_hf import run as run_smile
from smile_hf.analysis import analyze_run
from smile_hf.model_card import build_model_card, model_card_from_trainer, training_results

from .test_hub import FakeHub, no_network  # noqa: F401  (no_network: fixture)
from .test_text_methods import text_args, text_trainer
from .test_text_run import TEXT_MODEL, TINY, csv_folder  # noqa: F401  (csv_folder: fixture)
from .text_testing import pad_collator, pad_id, text_source_and_student, token_dataset


def test_push_to_hub_of_a_text_run_uploads_its_tokenizer_and_a_text_card(
    tmp_path, monkeypatch, capsys, no_network, csv_folder  # noqa: F811
):
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    train, validation = csv_folder
    result = run_smile.main([
        "--model_name_or_path", TEXT_MODEL, "--train_file", train, "--validation_file", validation, "--method",
        "smile", "--max_seq_length", "48", "--output_dir", str(tmp_path / "run"), "--push_to_hub",
        "--hub_model_id", "someone/text-tiny", "--calibration", "temperature", *TINY,
    ])  # fmt: skip
    assert f"Results ({train}, 9 eval texts, model {TEXT_MODEL}):" in capsys.readouterr().out  # the summary line
    assert set(hub.repos) == {"someone/text-tiny"}
    files = set(hub.uploads[-1]["files"])
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    repo = tmp_path / "hub" / "someone" / "text-tiny"
    model = AutoModelForSequenceClassification.from_pretrained(str(repo))  # the auto class the card names
    assert model.config.id2label == {0: "games", 1: "mail", 2: "math"}
    assert AutoTokenizer.from_pretrained(str(repo))("a b").input_ids  # the uploaded tokenizer loads

    card = ModelCard.load(repo / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "text-classification" in card.data.tags
    assert "image-classification" not in card.data.tags
    (accuracy,) = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert accuracy.task_type == "text-classification" and accuracy.task_name == "Text Classification"
    assert accuracy.metric_value == pytest.approx(result["metrics"]["eval_accuracy"], abs=1e-12)
    assert (accuracy.dataset_type, accuracy.dataset_name) == ("csv", "train.csv (local file)")  # a local CSV
    assert card.data.datasets is None  # local files: no Hub dataset named
    assert 'pipeline("text-classification", model="someone/text-tiny")' in card.text
    assert "`BertForSequenceClassification` checkpoint (`AutoModelForSequenceClassification` loads it), with its\ntokenizer" in card.text
    assert "The data are local text files" in card.text and "every text is assigned one of them" in card.text
    # 1 of the 4 training texts per class held out for the calibration, said in texts
    assert "Validation (hyperparameter search, calibration): 3 texts held out of the training data" in card.text
    assert "on a validation split of 3 texts held out of training and evaluation" in card.text
    # images are named only where the method's own description is read for texts
    description, rest = card.text.split("## Model description", 1)[1].split("The exported model is", 1)
    assert "image" not in (card.text.split("## Model description", 1)[0] + rest).lower()
    assert "This model classifies texts: where the description above speaks of images" in description


def test_a_text_card_counts_texts_and_names_the_local_file_type(tmp_path):
    results = training_results([{"eval_accuracy": 0.5, "eval_loss": 1.0, "step": 3}])
    card = build_model_card(
        model_name="m", method="finetune", results=results, modality="text", dataset_name="train.jsonl",
        local_dataset=True, eval_examples=9, eval_split_examples=20, train_samples_per_class=4, labels=["a", "b"],
    )  # fmt: skip
    (accuracy,) = card.data.eval_results
    assert accuracy.dataset_type == "json" and accuracy.dataset_name == "train.jsonl (local file)"
    assert "9 of its 20 texts, drawn at random" in card.text and "Training used 4 texts per class" in card.text
    image_card = build_model_card(model_name="m", method="finetune", results=results, dataset_name="bugs",
                                  local_dataset=True)  # fmt: skip
    assert image_card.data.eval_results[0].dataset_type == "imagefolder" and image_card.data.pipeline_tag == (
        "image-classification"
    )
    assert 'pipeline("image-classification"' in image_card.text
    with pytest.raises(ValueError, match="modality must be one of"):
        build_model_card(model_name="m", method="finetune", modality="audio")
    trainer = SimpleNamespace(args=SimpleNamespace(hub_model_id=None, output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="a text classifier: `tasks` must be 'text-classification'"):
        model_card_from_trainer(trainer, model=SimpleNamespace(config=None), method_title="Fine-tuning",
                                tasks="image-classification", modality="text")  # fmt: skip


def test_the_trainer_writes_a_text_card(tmp_path):
    trainer = text_trainer(tmp_path, "finetune")
    trainer.create_model_card(dataset="Tiny texts")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "BertForSequenceClassification" in card.text
    with pytest.raises(ValueError, match="`tasks` must be 'text-classification'"):
        trainer.create_model_card(tasks="image-classification")


def test_unlabeled_images_are_refused_for_a_text_classifier(tmp_path):
    source, student = text_source_and_student("bert")
    with pytest.raises(ValueError, match="`unlabeled_dataset` holds images; a text classifier trains without it"):
        SmileTrainer(
            model=student, args=text_args(tmp_path, "smile"), teacher_model=source, train_dataset=token_dataset(4),
            data_collator=pad_collator(pad_id(student)), unlabeled_dataset=token_dataset(4),
        )  # fmt: skip


def test_a_method_of_unlabelled_images_is_refused_for_text(tmp_path):
    with pytest.raises(ValueError, match="Method 'fixmatch' trains on unlabelled images, which a text classifier"):
        text_trainer(tmp_path, "fixmatch")
    with pytest.raises(run_smile.InputError, match="Method 'fixmatch' trains on unlabelled images, which text runs"):
        run_smile.main(["--dataset", "debian_sections", "--method", "fixmatch", "--output_dir", str(tmp_path), *TINY])


def test_onnx_export_of_a_text_classifier_gives_pytorchs_logits(tmp_path):
    from smile_hf.onnx_export import OnnxExportError, export_onnx, missing_onnx_packages, onnx_session

    if missing_onnx_packages():
        pytest.skip(f"ONNX export needs {missing_onnx_packages()}")
    folder = tmp_path / "model"
    shutil.copytree(TEXT_MODEL, folder)
    with pytest.raises(OnnxExportError, match=r"--quantize: a text classifier \(BertForSequenceClassification\)"):
        export_onnx(folder, quantize="int8")
    path = export_onnx(folder)
    assert path == str(folder / "model.onnx")
    # texts of other lengths and another batch size than the traced ones: both axes are dynamic
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["games", "a mail client for the terminal", "tools for symbolic algebra and numerical analysis of data"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = model(**encoded).logits.numpy()
    session = onnx_session(path)
    got = session.run(["logits"], {i.name: encoded[i.name].numpy() for i in session.get_inputs()})[0]
    # float32 both ways, other kernel orders: a few ulps per operation; 1e-4 (the export's own check) is far above
    # them and far below a difference that changes a prediction
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    section = (folder / "README.md").read_text(encoding="utf-8")
    assert "inputs `input_ids`, `attention_mask`, `token_type_ids`, any batch size and sequence length" in section
    assert "- `model.onnx`: float32" in section and "OnnxImageClassifier" not in section


def test_the_linearity_analysis_refuses_a_text_model():
    with pytest.raises(ValueError, match=r"holds a text classifier \(BertForSequenceClassification\): the linearity"):
        analyze_run(TEXT_MODEL)


def test_compare_refuses_the_analysis_of_text_runs_before_training(tmp_path):
    from smile_hf.run.compare import main as compare

    with pytest.raises(run_smile.InputError, match="--analyze: the linearity analysis mixes images"):
        compare(["--dataset", "debian_sections", "--compare_methods", "finetune", "--seeds", "0", "--analyze",
                 "--output_dir", str(tmp_path), *TINY])  # fmt: skip
    assert not list(tmp_path.glob("*/model.safetensors"))
