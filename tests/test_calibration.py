"""Temperature scaling: the fitted temperature (against a brute-force grid), the metrics before and after, the fold
into the exported head(s) (through `from_pretrained` and `pipeline()`), and the Trainer's `calibrate`."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ViTImageProcessor, pipeline

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf import run as run_smile  # the driver of examples/run_smile.py
from smile_hf.backbones import BackboneAdapter
from smile_hf.calibration import (
    CALIBRATION_FILE,
    MIN_CALIBRATION_IMAGES,
    RELIABILITY_FILE,
    TEMPERATURE_BOUNDS,
    fit_temperature,
    fold_temperature,
    negative_log_likelihood,
    plot_reliability,
    temperature_scaling,
)
from smile_hf.metrics import calibration_bins, expected_calibration_error, softmax

from .testing_utils import (
    ALL_FAMILIES,
    IMAGE_SIZE,
    random_image_dataset,
    script_device_args,
    source_and_student,
    tiny_model,
    training_device_args,
)


def sampled_logits(n=4000, classes=5, true_temperature=2.5, seed=0):
    """Logits whose labels are drawn from softmax(logits / true_temperature): the NLL-optimal T is near it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(n, classes))
    probabilities = softmax(logits / true_temperature)
    labels = np.array([rng.choice(classes, p=p) for p in probabilities])
    return logits, labels


# ---- the fit --------------------------------------------------------------------------------------------------------


def test_fit_temperature_matches_a_grid_search():
    logits, labels = sampled_logits()
    fitted = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.5), np.log(10.0), 4001))  # steps of 0.075% in T
    nll = [negative_log_likelihood(logits, labels, t) for t in grid]
    best = grid[int(np.argmin(nll))]
    assert abs(fitted - best) / best < 2e-3  # within ~2 grid steps
    assert negative_log_likelihood(logits, labels, fitted) <= min(nll) + 1e-9  # no grid point does better
    assert abs(fitted - 2.5) / 2.5 < 0.1  # and, with 4000 samples, near the temperature that drew the labels


def test_nll_is_the_cross_entropy():
    logits, labels = sampled_logits(n=50)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits / 1.7), torch.tensor(labels)).item()
    assert negative_log_likelihood(logits, labels, 1.7) == pytest.approx(expected, rel=1e-12)


def test_a_perfect_classifier_gets_the_lower_bound():
    """All correct: the NLL keeps falling as T -> 0, so the bound is returned, not a divergent T."""
    logits = np.eye(4)[[0, 1, 2, 3, 0, 1]] * 5.0
    assert fit_temperature(logits, np.array([0, 1, 2, 3, 0, 1])) == TEMPERATURE_BOUNDS[0]


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="n x classes logits and n labels"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="class ids in 0..1"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="non-finite logits"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))


def test_temperature_scaling_reports_before_and_after():
    logits, labels = sampled_logits(n=2000)
    result = temperature_scaling(logits, labels)
    t = result.temperature
    assert result.nll_after == pytest.approx(negative_log_likelihood(logits, labels, t))
    assert result.nll_after < result.nll_before
    assert result.ece_before == pytest.approx(expected_calibration_error(softmax(logits), labels))
    assert result.ece_after == pytest.approx(expected_calibration_error(softmax(logits / t), labels))
    assert result.ece_after < result.ece_before  # over-confident logits (T ~ 2.5) become calibrated
    assert result.num_samples == 2000


def test_calibration_bins_give_the_ece_of_a_direct_loop():
    rng = np.random.default_rng(1)
    probabilities = softmax(rng.normal(scale=3.0, size=(300, 4)))
    labels = rng.integers(0, 4, 300)
    counts, accuracy, confidence = calibration_bins(probabilities, labels, 10)
    assert counts.sum() == 300
    direct = 0.0  # the textbook definition, written out independently
    top, correct = probabilities.max(1), probabilities.argmax(1) == labels
    for b in range(10):
        members = (top > b / 10) & (top <= (b + 1) / 10)
        if members.any():
            direct += members.mean() * abs(correct[members].mean() - top[members].mean())
    assert expected_calibration_error(probabilities, labels, 10) == pytest.approx(direct, abs=1e-12)


def test_plot_reliability_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(2)
    probabilities = softmax(rng.normal(size=(100, 3)))
    path = plot_reliability({"model": (probabilities, rng.integers(0, 3, 100))}, str(tmp_path / "r.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(ImportError, match=r"^plot_reliability needs matplotlib: pip install matplotlib\.$"):
        plot_reliability({"m": (np.eye(2), np.arange(2))}, str(tmp_path / "r.png"))


# ---- the fold ---------------------------------------------------------------------------------------------------------


def image_processor():
    return ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def pil_images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("family", ["resnet", "vit", "deit_distilled"])
def test_folded_model_exports_calibrated_probabilities(family, tmp_path):
    """After folding, the saved model gives softmax(logits / T) of the unfolded one through from_pretrained and
    pipeline(), with the same top-1. Tolerances: float32 logits of ~1 (1e-5), pipeline scores rounded to 4 digits
    by transformers (1e-4)."""
    temperature = 2.7
    model = tiny_model(family, 4, device="cpu").eval()
    processor = image_processor()
    images = pil_images()
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    heads = fold_temperature(model, temperature, check_input=pixel_values[:2])
    assert len(heads) == (2 if family == "deit_distilled" else 1)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        exported = loaded(pixel_values=pixel_values).logits
    torch.testing.assert_close(exported, logits / temperature, rtol=1e-5, atol=1e-6)
    assert torch.equal(exported.argmax(-1), logits.argmax(-1))  # top-1 unchanged
    expected = torch.softmax(logits / temperature, -1)
    classify = pipeline("image-classification", model=str(tmp_path), device="cpu")
    for image, probabilities in zip(images, expected):
        scores = {p["label"]: p["score"] for p in classify(image, top_k=4)}
        got = torch.tensor([scores[model.config.id2label[i]] for i in range(4)])
        torch.testing.assert_close(got, probabilities.float(), rtol=0, atol=1e-4)


def test_fold_into_a_lora_student_reaches_the_merged_model():
    peft = pytest.importorskip("peft")
    from smile_hf.lora import wrap_student

    model = tiny_model("resnet", 3, device="cpu").eval()
    student = wrap_student(model, peft.LoraConfig(r=2, target_modules=["convolution"])).eval()
    pixel_values = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        logits = student(pixel_values=pixel_values).logits
    fold_temperature(student, 3.0, check_input=pixel_values)
    merged = student.merge_and_unload().eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=pixel_values).logits, logits / 3.0, rtol=1e-5, atol=1e-6)


def test_a_head_that_is_not_last_is_refused_and_restored(monkeypatch):
    """BackboneAdapter already refuses models whose logits are not their heads' output; the fold checks the logits
    again (defence in depth), here seen through a non-affine map of the logits."""
    import smile_hf.calibration as calibration

    model = tiny_model("resnet", 3, device="cpu").eval()
    real = calibration._logits
    monkeypatch.setattr(calibration, "_logits", lambda m, x: real(m, x).tanh())
    head = BackboneAdapter(model).classifiers(model)[0]
    weight = head.weight.detach().clone()
    with pytest.raises(ValueError, match="cannot be folded"):
        fold_temperature(model, 2.0, check_input=torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert torch.equal(head.weight, weight)
    with pytest.raises(ValueError, match="finite number > 0"):
        fold_temperature(model, 0.0)


# ---- the Trainer --------------------------------------------------------------------------------------------------------


def test_trainer_calibrate(tmp_path, caplog):
    source, student = source_and_student("resnet", device="cpu")
    train, validation, test = (random_image_dataset(16, 3, seed=s) for s in (0, 1, 2))
    args = SmileTrainingArguments(
        output_dir=str(tmp_path), report_to="none", **training_device_args("cpu"), method="finetune", max_steps=2,
        per_device_train_batch_size=4, optim="sgd", learning_rate=0.1, save_strategy="no", disable_tqdm=True,
        calibration="temperature",
    )  # fmt: skip
    trainer = SmileTrainer(student, args, teacher_model=source, train_dataset=train, eval_dataset=test,
                           processing_class=image_processor())  # fmt: skip
    trainer.train()
    with pytest.raises(ValueError, match="not calibrated: call trainer.calibrate"):
        trainer.save_model()
    with pytest.raises(ValueError, match="training or the evaluation dataset"):
        trainer.calibrate(test)
    before = trainer.predict(validation).predictions
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        result = trainer.calibrate(validation)
    assert f"Temperature scaling fitted on 16 validation images only (fewer than {MIN_CALIBRATION_IMAGES})" in caplog.text
    assert result.temperature == pytest.approx(fit_temperature(before, validation[:]["labels"].numpy()), rel=1e-6)
    after = trainer.predict(validation).predictions
    np.testing.assert_allclose(after, before / result.temperature, rtol=1e-4, atol=1e-6)
    saved = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert saved == pytest.approx(result.to_dict())
    logged = [e for e in trainer.state.log_history if "calibration_temperature" in e]
    assert logged[-1]["calibration_ece_after"] == pytest.approx(result.ece_after)
    assert (tmp_path / RELIABILITY_FILE).is_file() == (importlib.util.find_spec("matplotlib") is not None)
    with pytest.raises(ValueError, match="already calibrated"):
        trainer.calibrate(validation)
    trainer.save_model()  # calibrated: saved
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert f"temperature T = {result.temperature:.4g}" in card and f"{100 * result.ece_after:.2f}%" in card
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        exported = loaded(pixel_values=validation[:]["pixel_values"]).logits.numpy()
    np.testing.assert_allclose(exported, before / result.temperature, rtol=1e-4, atol=1e-5)


def test_calibration_argument_is_checked():
    with pytest.raises(ValueError, match="`calibration` must be one of"):
        SmileTrainingArguments(output_dir="x", calibration="isotonic")


def test_calibration_without_a_validation_split_is_refused(tmp_path, monkeypatch):
    """Data with a training and an evaluation split only (no split held out of training): `--calibration
    temperature` is one error line before any training, never a temperature fitted on the evaluation split; without
    training, `--calibration` is refused. (The run script holds a split out: tests/test_run_calibration.py.)"""

    def fail(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(SmileTrainer, "train", fail)
    common = ["--dataset", "digits", "--output_dir", str(tmp_path), "--report_to", "none", "--calibration", "temperature"]
    model_args, data_args, training_args = run_smile.parse_args([*common, "--train_samples_per_class", "2"])
    data = run_smile.prepare_data(data_args, model_args, 0, None)  # no validation split
    with pytest.raises(run_smile.InputError, match="held out of both training and evaluation, and this data has only"):
        run_smile.train_one(model_args, training_args, data, None)
    with pytest.raises(run_smile.InputError, match="--calibration calibrates a model after training"):
        run_smile.parse_args([*common, "--do_train", "False", "--do_eval", "--model_name_or_path", str(tmp_path)])


def test_calibration_benchmark_on_a_saved_run(tmp_path):
    """benchmarks/calibration.py on a tiny saved 3-shot run: T is fitted on the training images the run did not train
    on, the evaluation scores before folding are those the run's Trainer reported (a second code path), and top-1 is
    the same after."""
    from benchmarks import calibration as benchmark

    run_dir = tmp_path / "run"
    result = run_smile.main([
        "--dataset", "digits", "--train_samples_per_class", "3", "--max_eval_samples", "40", "--method", "mixup",
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--save_strategy", "steps", "--save_steps", "100",
        "--report_to", "none", "--disable_tqdm", "True", "--output_dir", str(run_dir), *script_device_args(),
    ])  # fmt: skip
    records = benchmark.main([str(run_dir), "--output", str(tmp_path / "calibration")])
    (record,) = records
    assert record["method"] == "mixup" and record["num_eval"] == 40
    assert record["num_validation"] == 898 - 30  # digits' training half, less the 3 x 10 images trained on
    assert record["eval_before"]["accuracy"] == pytest.approx(result["metrics"]["eval_accuracy"])
    assert record["eval_before"]["ece"] == pytest.approx(result["metrics"]["eval_ece"], abs=1e-6)
    assert record["eval_after"]["accuracy"] == record["eval_before"]["accuracy"]
    assert (tmp_path / "calibration.md").read_text().startswith("| method | runs | T |")
    assert json.loads((tmp_path / "calibration.json").read_text())["runs"][0]["fit"] == record["fit"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_fold_gives_scaled_logits_in_every_family(family):
    """Every supported family: the folded model's logits are the unfolded ones divided by T (float32 tolerance)."""
    model = tiny_model(family, 4, device="cpu").eval()
    pixel_values = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))

    def logits_of(model):
        outputs = model(pixel_values=pixel_values)
        return outputs["logits"] if "logits" in outputs else outputs[0]  # PP-LCNet returns its logits first

    with torch.no_grad():
        logits = logits_of(model)
        fold_temperature(model, 0.4, check_input=pixel_values)
        torch.testing.assert_close(logits_of(model), logits / 0.4, rtol=1e-4, atol=1e-5)
