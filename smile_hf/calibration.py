# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Temperature scaling (Guo et al., 2017) folded into the exported classifier head.

One temperature `T > 0` is fitted by minimising the negative log-likelihood of `softmax(logits / T)` on a held-out
validation split ([`fit_temperature`]); then the weight and bias of the model's final linear classifier(s) are divided
by `T` ([`fold_temperature`]), so that the saved model itself outputs `logits / T`: `AutoModelForImageClassification`,
`pipeline("image-classification")` and ONNX exports give the calibrated probabilities with no code at load time. The
order of the logits, hence top-1 and top-k, is unchanged.

[`calibrate_trainer`] does both for a [`SmileTrainer`] (its `calibrate` method) and records `T` with the NLL and
ECE before and after; [`plot_reliability`] draws reliability diagrams.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import BackboneAdapter, is_text_classifier, unwrap_model
from .metrics import calibration_bins, expected_calibration_error, softmax
from .plotting import pyplot, save_figure

logger = logging.getLogger(__name__)

CALIBRATIONS = ("none", "temperature")
"""Values of `SmileTrainingArguments.calibration`."""
CALIBRATION_FILE = "calibration.json"
"""What [`calibrate_trainer`] writes in the output folder: the fields of [`CalibrationResult`]."""
RELIABILITY_FILE = "reliability.png"
"""The reliability diagram (before / after temperature scaling) [`calibrate_trainer`] writes beside it."""
MIN_CALIBRATION_IMAGES = 100
"""Below this many validation images, [`calibrate_trainer`] warns that the split is small: the ECE's 15 bins then
average fewer than 7 images each, and one temperature fitted on so few images can make the calibration of new
images worse."""
TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The fitted temperature is clipped to this range: when every validation example is classified correctly the NLL
keeps decreasing as `T -> 0`, and a model that is confidently wrong everywhere pushes `T -> inf`."""


def _as_arrays(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """`logits` (n x classes) and integer `labels` (n) as float64 / int64 arrays; ValueError on bad input."""
    logits = np.asarray(logits[0] if isinstance(logits, (tuple, list)) else logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"Temperature scaling needs n x classes logits and n labels (n >= 1), got logits of shape "
            f"{logits.shape} and {len(labels)} labels."
        )
    if not np.isfinite(logits).all():
        raise ValueError("Temperature scaling got non-finite logits: the model diverged; train it again.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"Temperature scaling needs class ids in 0..{logits.shape[1] - 1}, got {labels[:5]}...")
    return logits, labels.astype(np.int64)


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean over examples of `-log softmax(logits / temperature)[label]` (nats)."""
    logits, labels = _as_arrays(logits, labels)
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    return float((log_norm - scaled[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature `T` minimising the NLL of `softmax(logits / T)` against `labels` (L-BFGS on `log T`, float64).

    The NLL is convex in `1 / T` (a log-sum-exp of linear functions minus a linear one), so it has a single minimum
    along `log T` and L-BFGS finds it from `T = 1`. The result is restricted to `bounds` ([`TEMPERATURE_BOUNDS`]):
    the best of L-BFGS's point (clipped) and the two bounds.

    Args:
        logits (`np.ndarray` or `torch.Tensor`): n x classes logits of the validation split.
        labels (`np.ndarray` or `torch.Tensor`): n class ids.
        bounds (`tuple[float, float]`): smallest and largest temperature returned.
    """
    logits, labels = _as_arrays(logits, labels)
    z, y = torch.from_numpy(logits), torch.from_numpy(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z * torch.exp(-log_t), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(torch.exp(log_t.detach()))
    temperature = min(max(temperature, bounds[0]), bounds[1]) if math.isfinite(temperature) else bounds[0]
    # The NLL has one minimum along log T: over the interval it is at the stationary point or at a bound (where the
    # gradient vanishes before the minimum is reached, e.g. when every example is right and T -> 0 keeps helping).
    return float(min((temperature, *bounds), key=lambda t: negative_log_likelihood(logits, labels, t)))


@dataclass
class CalibrationResult:
    """A fitted temperature and what it changes on the split it was fitted on.

    Attributes:
        temperature: `T`, the logits are divided by it.
        nll_before, nll_after: mean negative log-likelihood (nats) of `softmax(logits)` and `softmax(logits / T)`.
        ece_before, ece_after: expected calibration error ([`~smile_hf.metrics.expected_calibration_error`]).
        num_samples: examples of the validation split.
        ece_bins: bins of the ECE.
    """

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    num_samples: int
    ece_bins: int = 15

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def temperature_scaling(logits: Any, labels: Any, ece_bins: int = 15) -> CalibrationResult:
    """Fit `T` on `logits` / `labels` ([`fit_temperature`]) and measure NLL and ECE before and after."""
    logits, labels = _as_arrays(logits, labels)
    temperature = fit_temperature(logits, labels)
    return CalibrationResult(
        temperature=temperature,
        nll_before=negative_log_likelihood(logits, labels),
        nll_after=negative_log_likelihood(logits, labels, temperature),
        ece_before=expected_calibration_error(softmax(logits), labels, ece_bins),
        ece_after=expected_calibration_error(softmax(logits / temperature), labels, ece_bins),
        num_samples=len(labels),
        ece_bins=ece_bins,
    )


def _logits(model: nn.Module, inputs) -> torch.Tensor:
    outputs = model(**inputs) if isinstance(inputs, Mapping) else model(pixel_values=inputs)  # text: `input_ids`...
    return outputs["logits"] if "logits" in outputs else outputs[0]


@torch.no_grad()
def fold_temperature(
    model: nn.Module, temperature: float, check_input: torch.Tensor | Mapping | None = None
) -> list[nn.Linear]:
    """Divide the weight and bias of `model`'s final linear classifier(s) by `temperature`, in place, so that the model
    outputs `logits / temperature`.

    The classifiers are those of [`BackboneAdapter.classifiers`]: both heads of a distilled model (DeiT's
    `cls_classifier` and `distillation_classifier`, whose logits the model averages), and for a LoRA (peft) student
    the trained `modules_to_save` copy of the head, which [`smile_hf.lora.save_merged`] and `save_adapter` export.
    Other parameters (the auxiliary source head, the teacher) are left alone.

    Args:
        model (`nn.Module`): the classifier (possibly wrapped by DDP or peft).
        temperature (`float`): `T > 0`.
        check_input (`torch.Tensor` or `dict`, *optional*): a few `pixel_values` (a text model: a mapping of
            `input_ids`, `attention_mask`...); the model is run on them (in eval mode)
            before and after folding, and a model whose logits did not become `logits / T` (a head that is not the
            last operation) is restored and refused with a ValueError.

    Returns:
        `list[nn.Linear]`: the classifiers that were scaled.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"The temperature must be a finite number > 0, got {temperature}.")
    inner = unwrap_model(model)
    heads = BackboneAdapter(inner).classifiers(inner)
    was_training = inner.training
    before = None
    if check_input is not None:
        weight = heads[0].weight
        if isinstance(check_input, Mapping):  # a text model's inputs: token ids and masks keep their dtype
            check_input = {name: value.to(weight.device) for name, value in check_input.items()}
        else:
            check_input = check_input.to(device=weight.device, dtype=weight.dtype)
        before = _logits(inner.eval(), check_input).double()
        saved = [{name: p.detach().clone() for name, p in head.named_parameters()} for head in heads]
    for head in heads:
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)
    if before is not None:
        after = _logits(inner, check_input).double()
        expected = before / temperature
        rtol = max(1e-4, 64 * torch.finfo(heads[0].weight.dtype).eps)  # float32: 1e-4; bfloat16: 0.5
        if not torch.allclose(after, expected, rtol=rtol, atol=rtol * float(expected.abs().max()) / 10 + 1e-7):
            for head, parameters in zip(heads, saved):  # undo: the model is left exactly as it was
                for name, value in parameters.items():
                    getattr(head, name).copy_(value)
            inner.train(was_training)
            raise ValueError(
                f"{type(inner).__name__}'s logits are not an affine function of its final linear classifier's output, "
                "so the temperature cannot be folded into its weights; apply softmax(logits / T) at inference instead."
            )
    inner.train(was_training)
    return heads


def plot_reliability(
    curves: Mapping[str, tuple[Any, Any]], path: str, num_bins: int = 15, title: str = ""
) -> str:
    """Draw a reliability diagram: for each entry `name -> (probabilities, labels)` of `curves`, the accuracy of each
    confidence bin ([`~smile_hf.metrics.calibration_bins`]) against its mean confidence, with its ECE in the legend;
    the diagonal is perfect calibration. Writes the PNG `path` and returns it. Needs matplotlib (imported here)."""
    plt = pyplot("plot_reliability")
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="perfectly calibrated")
    for name, (probabilities, labels) in curves.items():
        counts, accuracy, confidence = calibration_bins(probabilities, labels, num_bins)
        filled = counts > 0
        ece = expected_calibration_error(probabilities, labels, num_bins)
        ax.plot(confidence[filled], accuracy[filled], marker="o", markersize=3, label=f"{name} (ECE {100 * ece:.1f}%)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path, title)


# ---- the Trainer side -------------------------------------------------------------------------------------------


def _check_split(trainer, dataset) -> None:
    """A ValueError unless `dataset` is a split of its own (given, neither the training nor an evaluation set) and the
    model is not calibrated already."""
    if dataset is None:
        raise ValueError("calibrate() needs a validation dataset (held out of training, not the evaluation split).")
    if getattr(trainer, "calibration", None) is not None:
        raise ValueError(
            f"The model was already calibrated (T = {trainer.calibration.temperature:.4g} is folded into its head): "
            "calibrate once per training."
        )
    evaluation = trainer.eval_dataset
    evaluation = list(evaluation.values()) if isinstance(evaluation, Mapping) else [evaluation]
    if dataset is trainer.train_dataset or any(dataset is split for split in evaluation):
        raise ValueError(
            "calibrate() was given the training or the evaluation dataset: fit the temperature on a validation split "
            "held out of both, or the reported calibration is optimistic."
        )


def calibrate_trainer(trainer, dataset) -> CalibrationResult:
    """Fit a temperature on `dataset` with the trainer's model, fold it into the model's head(s)
    ([`fold_temperature`]), log `calibration_*` values (into `trainer.state.log_history`) and, on the main process,
    write [`CALIBRATION_FILE`] and, with matplotlib, [`RELIABILITY_FILE`] in `args.output_dir`."""
    _check_split(trainer, dataset)
    prediction = trainer.predict(dataset, metric_key_prefix="calibration")
    logits, labels = _as_arrays(prediction.predictions, prediction.label_ids)
    result = temperature_scaling(logits, labels)
    first = trainer.adapter.model_inputs(trainer.data_collator([dataset[i] for i in range(min(4, len(dataset)))]))
    fold_temperature(trainer.model, result.temperature, check_input=first)
    trainer.log({f"calibration_{key}": value for key, value in result.to_dict().items()})
    items = "texts" if is_text_classifier(trainer.model) else "images"
    logger.info(
        f"Temperature scaling on {result.num_samples} validation {items}: T = {result.temperature:.4f}, NLL "
        f"{result.nll_before:.4f} -> {result.nll_after:.4f}, ECE {100 * result.ece_before:.2f}% -> "
        f"{100 * result.ece_after:.2f}%"
    )
    if result.num_samples < MIN_CALIBRATION_IMAGES:
        logger.warning(
            f"Temperature scaling fitted on {result.num_samples} validation {items} only (fewer than "
            f"{MIN_CALIBRATION_IMAGES}): the temperature is unreliable and can make new {items}' calibration worse; "
            f"hold out more {items} (--validation_samples_per_class, --validation_split_fraction)."
        )
    if trainer.args.should_save:
        os.makedirs(trainer.args.output_dir, exist_ok=True)
        with open(os.path.join(trainer.args.output_dir, CALIBRATION_FILE), "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2)
        try:
            curves = {"before": (softmax(logits), labels), f"after (T = {result.temperature:.3g})": (
                softmax(logits / result.temperature), labels)}  # fmt: skip
            plot_reliability(curves, os.path.join(trainer.args.output_dir, RELIABILITY_FILE), result.ece_bins,
                             title=f"validation split, {result.num_samples} {items}")  # fmt: skip
        except ImportError as error:
            logger.warning(f"No reliability diagram: {error}")
    return result


def check_calibrated(trainer) -> None:
    """A ValueError when `args.calibration` asks for temperature scaling and the trainer has not calibrated: the
    exported model would not be what the arguments say."""
    if getattr(trainer.args, "calibration", "none") != "none" and getattr(trainer, "calibration", None) is None:
        raise ValueError(
            f"calibration='{trainer.args.calibration}' but the model was not calibrated: call "
            "trainer.calibrate(validation_dataset) after training and before save_model (or set calibration='none')."
        )


__all__ = [
    "CALIBRATIONS", "CALIBRATION_FILE", "MIN_CALIBRATION_IMAGES", "RELIABILITY_FILE", "TEMPERATURE_BOUNDS", "CalibrationResult",
    "calibrate_trainer", "check_calibrated", "fit_temperature", "fold_temperature", "negative_log_likelihood",
    "plot_reliability", "temperature_scaling",
]  # fmt: skip
