"""ONNX export (`smile_hf.onnx_export`, `smile-hf export`): ONNX Runtime's logits against PyTorch's on the bundled
checkpoint, on a calibrated head and on tiny models of several families, at batch sizes 1 and 3 (the batch axis is
dynamic); int8 copies; `OnnxImageClassifier` against `pipeline("image-classification")`; the model card section and
the upload. The export tests skip, saying why, without the `onnx` extra (onnx, onnxscript, onnxruntime).

Tolerance of the float32 comparisons: 1e-4 absolute and relative ([`CHECK_TOLERANCE`]). Both sides compute the same
float32 operations, ONNX Runtime in other kernels (fused, with other summation orders), so they differ by a few ulps
per operation: 1e-6 to 4e-6 on these models. 1e-4 leaves a margin of 25x or more and still fails any graph
that computes something else (a dropped layer, a wrong normalisation or a lost temperature all move logits by 1e-2
or more).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ViTImageProcessor, pipeline

from smile_hf import onnx_export
from smile_hf.calibration import fold_temperature
from smile_hf.cli import main as cli_main
from smile_hf.model_card import ONNX_CARD_SECTION, onnx_card_section, replace_card_section
from smile_hf.onnx_export import (
    CHECK_TOLERANCE,
    ONNX_FILE,
    QUANTIZED_FILES,
    OnnxExportError,
    OnnxImageClassifier,
    export_onnx,
    missing_onnx_packages,
    onnx_logits,
    onnx_session,
    require_onnx,
)

from .test_export import one_thread  # noqa: F401  (autouse: one torch thread for tiny models)
from .testing_utils import ALL_FAMILIES, IMAGE_SIZE, REPO_ROOT, tiny_model

BUNDLED = REPO_ROOT / "checkpoints" / "fmnist-resnet-tiny"
MISSING = missing_onnx_packages()
requires_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install \"smile_hf[onnx]\" to run the ONNX tests"
)
FAST_FAMILIES = ["convnext", "swin", "vit"]
"""Families exported in the fast suite beside the bundled ResNet: a modern CNN, a windowed and a plain transformer.
The others of `ALL_FAMILIES` run in the slow sweep."""
NOT_EXPORTING = {"pp_lcnet": "PPLCNetForImageClassification returns a BaseModelOutputWithNoAttention without `logits`"}
"""Families refused, with the upstream reason (also listed in docs/checkpoints.md): transformers' PP-LCNet classifier
returns its class scores as `last_hidden_state`."""


def copy_bundled(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED, folder)
    return folder


def batch(size: int, shape=(3, 32, 32), seed: int = 1) -> torch.Tensor:
    return torch.randn(size, *shape, generator=torch.Generator().manual_seed(seed))


def torch_logits(model, pixel_values: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits.numpy()


def assert_onnx_matches(model, path, shape):
    """ONNX Runtime's logits of `path` equal `model`'s at batch sizes 1 and 3 (dynamic batch), within the tolerance."""
    session = onnx_session(path, threads=1)
    for size in (1, 3):
        pixel_values = batch(size, shape, seed=size)
        got, expected = onnx_logits(session, pixel_values), torch_logits(model, pixel_values)
        assert got.shape == expected.shape == (size, model.config.num_labels)
        np.testing.assert_allclose(got, expected, **CHECK_TOLERANCE)


def images(num=4, seed=0):
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(40 + 5 * i, 30, 3) * 255).astype("uint8")) for i in range(num)]


# ---- without the onnx extra ----------------------------------------------------------------------------------------


def test_missing_packages_are_one_line_naming_the_extra(monkeypatch):
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    with pytest.raises(OnnxExportError, match=r"needs onnxruntime: pip install \"smile_hf\[onnx\]\"") as error:
        require_onnx()
    assert "\n" not in str(error.value)


def test_card_section_is_added_once_and_replaced():
    card = "---\nlicense: mit\n---\n# m\n\ntext\n"
    first = replace_card_section(card, ONNX_CARD_SECTION, onnx_card_section({"model.onnx": "float32"}))
    assert first.startswith(card.rstrip("\n")) and "- `model.onnx`: float32" in first
    files = {"model.onnx": "float32", "model.int8.onnx": "int8"}
    second = replace_card_section(first, ONNX_CARD_SECTION, onnx_card_section(files))
    assert second.count("## ONNX") == 1 and "- `model.int8.onnx`: int8" in second
    assert second.startswith(card.rstrip("\n"))  # what was there before is kept as it was


# ---- the bundled checkpoint ----------------------------------------------------------------------------------------


@requires_onnx
def test_bundled_checkpoint_exports_with_a_dynamic_batch_and_an_int8_copy(tmp_path, capsys):
    folder = copy_bundled(tmp_path)
    cli_main(["export", str(folder), "--format", "onnx", "--quantize", "int8"])
    assert f"{folder / ONNX_FILE} (" in capsys.readouterr().out
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert_onnx_matches(model, folder / ONNX_FILE, (3, 32, 32))

    int8 = folder / QUANTIZED_FILES["int8"]
    assert int8.stat().st_size < 0.5 * (folder / ONNX_FILE).stat().st_size  # int8 weights: a quarter, plus scales
    pixel_values = batch(16, seed=5)
    quantized = onnx_logits(onnx_session(int8, threads=1), pixel_values)
    expected = torch_logits(model, pixel_values)
    # int8: 256 levels per tensor; rounding errors over the network's layers stay a few percent of the logits' range,
    # while a wrong scale or a broken graph moves logits by about their whole range.
    assert np.abs(quantized - expected).max() < 0.15 * (expected.max() - expected.min())

    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith((BUNDLED / "README.md").read_text(encoding="utf-8").rstrip("\n"))
    assert "- `model.onnx`:" in card and "- `model.int8.onnx`: int8 (ONNX Runtime dynamic quantization" in card
    export_onnx(folder)  # again, without int8: the section is replaced, not added twice
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.count("## ONNX") == 1 and "model.int8.onnx" not in card


@requires_onnx
def test_calibrated_head_is_kept(tmp_path):
    """A temperature folded into the head is exported: ONNX Runtime gives the PyTorch logits divided by T."""
    model = AutoModelForImageClassification.from_pretrained(BUNDLED).eval()
    pixel_values = batch(3, seed=7)
    before = torch_logits(model, pixel_values)
    temperature = 2.5
    fold_temperature(model, temperature)
    folder = tmp_path / "calibrated"
    model.save_pretrained(folder)
    shutil.copy(BUNDLED / "preprocessor_config.json", folder)
    path = export_onnx(folder)
    got = onnx_logits(onnx_session(path, threads=1), pixel_values)
    np.testing.assert_allclose(got, before / temperature, **CHECK_TOLERANCE)
    assert np.abs(got - before).max() > 0.1  # the calibrated logits, not the raw ones


@requires_onnx
def test_onnx_classifier_predicts_like_the_pipeline(tmp_path):
    folder = copy_bundled(tmp_path)
    export_onnx(folder)
    classifier = OnnxImageClassifier(folder, threads=1)
    reference = pipeline("image-classification", model=str(folder), device="cpu")
    pictures = images()
    got = classifier(pictures, top_k=3)
    expected = reference(pictures, top_k=3)
    assert len(got) == len(pictures)
    for ours, theirs in zip(got, expected):
        assert [p["label"] for p in ours] == [p["label"] for p in theirs]
        np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in theirs], atol=1e-5)
    path = tmp_path / "one.png"
    pictures[0].save(path)
    assert classifier(str(path), top_k=2) == classifier(pictures[0], top_k=2)  # a file or an image, one result
    assert len(classifier(pictures[0], top_k=50)) == 10  # top_k is capped at the number of classes


@requires_onnx
def test_static_int8_with_calibration_images(tmp_path):
    folder = copy_bundled(tmp_path)
    calibration = tmp_path / "images"
    (calibration / "a").mkdir(parents=True)
    for i, picture in enumerate(images(12, seed=3)):
        picture.save(calibration / "a" / f"{i}.png")
    export_onnx(folder, quantize="int8", calibration_images=str(calibration))
    import onnx

    graph = onnx.load(str(folder / QUANTIZED_FILES["int8"])).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)  # static QDQ, activations included
    assert "ONNX Runtime static quantization" in (folder / "README.md").read_text(encoding="utf-8")
    classifier = OnnxImageClassifier(folder, file=QUANTIZED_FILES["int8"], threads=1)
    assert len(classifier(images(2), top_k=1)) == 2


# ---- bad input -----------------------------------------------------------------------------------------------------


@requires_onnx
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{tmp}/nowhere"], "is not an exported model folder (no config.json)"),
        (["{bundled}", "--output", "{tmp}/x/model.onnx", "--push_to_hub", "me/m"], "--push_to_hub uploads files of RUN_DIR"),
        (["{bundled}", "--quantize", "int8", "--calibration_dir", "{tmp}/none"], "'{tmp}/none' is not a folder of images"),
        (["{bundled}", "--calibration_dir", "{tmp}"], "pass --quantize int8 with them"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, arguments, message):
    arguments = [a.format(tmp=tmp_path, bundled=BUNDLED) for a in arguments]
    message = message.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as exit_status:
        cli_main(["export", *arguments])
    assert exit_status.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("smile-hf export: error: ") and message in error and "\n" not in error
    assert not (BUNDLED / ONNX_FILE).exists()


@requires_onnx
def test_onnx_classifier_without_an_export_says_how_to_make_one(tmp_path):
    with pytest.raises(OnnxExportError, match="run smile-hf export .* --format onnx first"):
        OnnxImageClassifier(BUNDLED)


# ---- the upload ----------------------------------------------------------------------------------------------------


@requires_onnx
def test_push_to_hub_uploads_the_onnx_files_and_the_card(tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok=False, **kwargs):
            calls.append(("create", repo_id))

        def upload_folder(self, *, repo_id, folder_path, allow_patterns, **kwargs):
            from huggingface_hub.utils import filter_repo_objects

            local = sorted(p.name for p in Path(folder_path).iterdir() if p.is_file())
            calls.append(("upload", repo_id, sorted(filter_repo_objects(local, allow_patterns=allow_patterns))))
            return SimpleNamespace(commit_url="fake")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    folder = copy_bundled(tmp_path)
    cli_main(["export", str(folder), "--quantize", "int8", "--push_to_hub", "me/model"])
    assert calls == [("create", "me/model"), ("upload", "me/model", ["README.md", "model.int8.onnx", "model.onnx"])]


# ---- families ------------------------------------------------------------------------------------------------------


def save_tiny(family: str, folder: Path) -> torch.nn.Module:
    model = tiny_model(family, num_labels=4, device="cpu").eval()
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return model


def check_family(family: str, tmp_path: Path):
    folder = tmp_path / family
    model = save_tiny(family, folder)
    if family in NOT_EXPORTING:
        with pytest.raises(OnnxExportError, match=NOT_EXPORTING[family]) as error:
            export_onnx(folder)
        assert "\n" not in str(error.value) and not (folder / ONNX_FILE).exists()
        return
    path = export_onnx(folder)
    assert_onnx_matches(model, path, (3, IMAGE_SIZE, IMAGE_SIZE))


@requires_onnx
@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_family_exports_and_matches(family, tmp_path):
    check_family(family, tmp_path)


@requires_onnx
@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in ALL_FAMILIES if f not in FAST_FAMILIES])
def test_every_family_exports_and_matches(family, tmp_path):
    check_family(family, tmp_path)


@requires_onnx
def test_trainer_push_to_hub_uploads_the_onnx_files_of_its_output_dir(tmp_path, monkeypatch):
    """A later `Trainer.push_to_hub` of the folder (its `--output_dir`) uploads the ONNX files with the model."""
    import transformers.trainer
    from transformers import Trainer, TrainingArguments

    from .test_hub import FakeHub

    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hub)
    folder = copy_bundled(tmp_path)
    export_onnx(folder, quantize="int8")
    args = TrainingArguments(output_dir=str(folder), push_to_hub=True, hub_model_id="me/model", report_to="none",
                             use_cpu=True)  # fmt: skip
    Trainer(model=AutoModelForImageClassification.from_pretrained(folder), args=args).push_to_hub()
    assert {ONNX_FILE, QUANTIZED_FILES["int8"], "model.safetensors", "config.json"} <= set(hub.uploads[-1]["files"])


@requires_onnx
def test_benchmark_smoke(tmp_path):
    """`benchmarks/onnx_export.py` on the bundled checkpoint (saved already: no training), one short round."""
    import json

    from benchmarks.onnx_export import main as benchmark

    folder = copy_bundled(tmp_path)
    benchmark(["--run_dir", str(folder), "--rounds", "1", "--repeats", "2", "--output", str(tmp_path / "report")])
    records = {r["model"]: r for r in json.loads((tmp_path / "report.json").read_text())["results"]}
    assert list(records) == ["PyTorch", "ONNX fp32", "ONNX int8 dynamic", "ONNX int8 static"]
    assert records["ONNX fp32"]["agreement_with_pytorch"] == 1.0  # the same predictions, computed apart
    # logits up to ~10 in size: the absolute part of the tolerance plus its relative part at that size, 1e-4 x 10
    assert records["ONNX fp32"]["max_abs_logit_difference"] < CHECK_TOLERANCE["atol"] + CHECK_TOLERANCE["rtol"] * 10
    assert records["ONNX fp32"]["top1"] == records["PyTorch"]["top1"]
    assert all(r["ms_per_image"]["1"] > 0 and r["bytes"] > 0 for r in records.values())
    assert (tmp_path / "report.md").read_text().count("\n| ONNX") == 3


def test_a_card_written_again_after_training_keeps_the_onnx_section_of_files_still_there(tmp_path):
    """`SmileTrainer.create_model_card` (run by `save_model` and `push_to_hub`) renders the card again: the ONNX
    section written by `smile-hf export` stays while the files it names are in the folder, and goes with them."""
    from smile_hf import SmileTrainer, SmileTrainingArguments

    from .testing_utils import source_and_student

    _, student = source_and_student("resnet", num_target=3)
    args = SmileTrainingArguments(output_dir=str(tmp_path), report_to="none", method="finetune", use_cpu=True)
    trainer = SmileTrainer(model=student, args=args)
    files = {ONNX_FILE: "float32", QUANTIZED_FILES["int8"]: "int8"}
    for name in files:
        (tmp_path / name).write_bytes(b"graph")
    trainer.create_model_card()
    card = tmp_path / "README.md"
    card.write_text(replace_card_section(card.read_text(), ONNX_CARD_SECTION, onnx_card_section(files)))
    trainer.create_model_card()
    text = card.read_text()
    assert text.count("## ONNX") == 1 and "- `model.int8.onnx`: int8" in text and "# " in text.split("## ONNX")[0]
    (tmp_path / QUANTIZED_FILES["int8"]).unlink()
    trainer.create_model_card()
    assert "## ONNX" not in card.read_text()  # a card must not name a file the folder no longer holds
