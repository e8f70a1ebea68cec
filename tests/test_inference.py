"""The inference round trip: the train -> evaluate -> classify -> pipeline() example of `docs/checkpoints.md`, run as
written (offline), and `smile-hf train --do_train False` (--do_eval, --do_predict) checked against independent
computations: the training run's own metrics, and `pipeline("image-classification")` on the same files."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smile_hf import run as run_smile
from smile_hf.data import DataError, ImageTransform, TransformConfig, eval_image_processor
from smile_hf.inference import classify_files

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE = REPO_ROOT / "docs" / "checkpoints.md"
MARKER = "<!-- round-trip:"


def page_blocks() -> tuple[list[list[str]], str]:
    """The two fenced blocks after the page's round-trip marker: the bash block as argument lists (continuation
    lines joined, comments dropped), and the Python block's source."""
    text = PAGE.read_text(encoding="utf-8")
    after = text[text.index(MARKER) :]
    blocks = re.findall(r"```(\w+)\n(.*?)```", after, flags=re.S)[:2]
    assert [language for language, _ in blocks] == ["bash", "python"]
    lines = blocks[0][1].replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith("#")], blocks[1][1]


def write_digit_images(folder: Path) -> list[Path]:
    """`<digit>.png`: the first image of each class of scikit-learn's digits, as 8-bit grayscale PNG files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir()
    paths = []
    for digit in range(10):
        index = int(np.flatnonzero(digits.target == digit)[0])
        pixels = np.round(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
        paths.append(folder / f"{digit}.png")
        Image.fromarray(pixels, mode="L").save(paths[-1])
    return paths


def read_predictions(path: Path) -> dict[str, list[tuple[str, float]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    k = (len(rows[0]) - 1) // 2
    return {r["file"]: [(r[f"label_{i}"], float(r[f"score_{i}"])) for i in range(1, k + 1)] for r in rows}


@pytest.mark.auto_device(
    "the page's commands and Python block as written: smile-hf train and pipeline() pick the device"
)
def test_docs_round_trip_runs_as_written(tmp_path, monkeypatch, capsys):
    commands, python_source = page_blocks()
    assert len(commands) == 3 and all(c[:2] == ["smile-hf", "train"] for c in commands)
    monkeypatch.chdir(tmp_path)
    write_digit_images(tmp_path / "my_images")
    monkeypatch.setenv("TRANSFORMERS_NO_TQDM", "1")
    for command in commands:  # the command's driver, in this process (no interpreter start-up per command)
        run_smile.main(command[2:])

    # --do_eval on the export gives the metrics the training run reported (same model, data and transform)
    trained = json.loads((tmp_path / "runs/digits-smile/results.json").read_text())["runs"][0]["metrics"]
    evaluated = json.loads((tmp_path / "runs/digits-smile-eval/eval_results.json").read_text())["metrics"]
    for key in ("eval_accuracy", "eval_top5_accuracy", "eval_ece", "eval_loss"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key
    assert trained["eval_accuracy"] > 0.3  # it learned something (chance: 0.1)

    # the page's Python block runs, and pipeline() gives predictions.csv's labels and scores for every file
    namespace: dict = {}
    exec(compile(python_source, str(PAGE), "exec"), namespace)
    assert "'label'" in capsys.readouterr().out
    predictions = read_predictions(tmp_path / "runs/digits-smile-predict/predictions.csv")
    assert not (tmp_path / "runs/digits-smile-predict/eval_results.json").exists()  # nothing was evaluated
    assert sorted(predictions) == [f"{d}.png" for d in range(10)]
    for file, expected in predictions.items():
        got = [(p["label"], p["score"]) for p in namespace["classifier"](f"my_images/{file}", top_k=3)]
        assert [label for label, _ in got] == [label for label, _ in expected], file
        assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-5), file


def test_for_evaluation_recovers_the_exported_transform():
    """The config read back from an exported processor has the training run's eval sizes, whatever its crop_pct
    (crop / crop_pct alone would give 27, not 29 here); a processor of another kind keeps the training rule."""
    config = TransformConfig(crop_size=(24, 20), resize_size=(29, 25), mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    recovered = TransformConfig.for_evaluation(eval_image_processor(config))
    assert (recovered.crop_size, recovered.resize_size, recovered.mean, recovered.std) == (
        config.crop_size, config.resize_size, config.mean, config.std,
    )  # fmt: skip
    assert TransformConfig.for_evaluation(eval_image_processor(config), crop_pct=0.5).resize_size == (48, 40)
    assert TransformConfig.for_evaluation(None).resize_size == TransformConfig().resize_size


def test_classify_files_names_an_undecodable_file_or_skips_it(tmp_path, torch_device):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(REPO_ROOT / "checkpoints/fmnist-resnet-tiny")
    model = model.to(torch_device)  # classify_files runs the model where it is
    good = write_digit_images(tmp_path / "images")[:3]
    bad = tmp_path / "images" / "broken.png"
    bad.write_bytes(b"not an image")
    files = [str(good[0]), str(bad), str(good[1]), str(good[2])]
    transform = ImageTransform(TransformConfig(crop_size=(32, 32), resize_size=(37, 37)), train=False)
    with pytest.raises(DataError, match="broken.png"):
        classify_files(model, files, transform, batch_size=2)
    kept = classify_files(model, files, transform, top_k=20, batch_size=2, corrupt_images="skip")
    assert [p.file for p in kept] == [str(g) for g in good]
    # independent: the softmax of one forward pass on each image alone, all classes (top_k above the class count)
    with torch.no_grad():
        for p, path in zip(kept, good):
            pixel_values = transform(Image.open(path))[None].to(torch_device)
            probabilities = model(pixel_values=pixel_values).logits.softmax(-1)[0]
            expected = {model.config.id2label[i]: float(v) for i, v in enumerate(probabilities)}
            assert len(p.labels) == 10 and p.scores == sorted(p.scores, reverse=True)
            assert dict(zip(p.labels, p.scores)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--do_train", "False", "--do_eval", "--dataset", "digits"], "pass --model_name_or_path"),
        (["--do_train", "False", "--dataset", "digits", "--model_name_or_path", "m"], "nothing else to do"),
        (["--do_train", "False", "--do_predict", "--model_name_or_path", "m"], "--do_predict needs --predict_dir"),
        (["--dataset", "digits", "--do_predict", "--predict_dir", "/no/such/folder"], "an existing folder"),
        (["--dataset", "digits", "--predict_dir", "."], "--predict_dir is read with --do_predict only: add --do_predict"),
    ],
)
def test_inference_arguments_are_checked(argv, message):
    with pytest.raises(run_smile.InputError, match=re.escape(message)):
        run_smile.parse_args(argv)
