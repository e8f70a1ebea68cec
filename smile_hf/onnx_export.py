# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of a saved image (or text) classifier, and ONNX Runtime inference through the folder's image processor.

[`export_onnx`] writes `model.onnx` beside the exported model (`smile-hf export RUN_DIR --format onnx`): the model
as saved, so a temperature folded into the head by [`smile_hf.calibration`] is part of the graph, traced by
`torch.onnx.export(..., dynamo=True)` with one input `pixel_values` (batch x channels x height x width, the batch
axis dynamic, the rest the size the folder's image processor gives) and one output `logits`. It checks the graph on
ONNX Runtime against PyTorch before it returns, and with `quantize="int8"` also writes `model.int8.onnx` (ONNX
Runtime's quantization: dynamic, or static with calibration images; see [`quantize_onnx`]). The folder's model card
gets a section naming the files and how to run them; `smile-hf export --push_to_hub REPO_ID` uploads them.

[`OnnxImageClassifier`] runs such a file with ONNX Runtime: the same image processor, the labels of `config.json`,
the output of `pipeline("image-classification")` (a list of `{"label", "score"}`, most probable first).

A text classifier's folder (`*ForSequenceClassification`) exports too, in float32: inputs `input_ids`,
`attention_mask` (and `token_type_ids` when its tokenizer gives them), batch and sequence axes dynamic
([`export_text_onnx`]); run it with ONNX Runtime on the folder's tokenizer.

Needs the `onnx` extra (`pip install "smile_hf[onnx]"`: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from .backbones.text import saved_text_classifier
from .metrics import softmax
from .model_card import ONNX_CARD_SECTION, onnx_card_section, onnx_text_card_section, replace_card_section

ONNX_FILE = "model.onnx"
"""The file [`export_onnx`] writes beside the model."""
QUANTIZED_FILES = {"int8": "model.int8.onnx"}
"""`quantize` value -> the quantized file written beside `model.onnx`."""
FILE_DESCRIPTIONS = {
    ONNX_FILE: "float32, the logits of the PyTorch model",
    "int8": "int8 (ONNX Runtime dynamic quantization: int8 weights, activations quantized at run time); smaller, "
    "approximate logits",
    "int8-static": "int8 (ONNX Runtime static quantization, activation ranges calibrated on images of the task); "
    "smaller, approximate logits",
}
"""What the model card says of each file (a quantized file by its quantization)."""
FORMATS = ("onnx",)
"""Formats of `smile-hf export --format`."""
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
"""What the export needs: the `onnx` extra of setup.py."""
EXPORT_BATCH = 2
"""Batch size of the example input the graph is traced with: 2, not 1, so that the traced batch axis stays symbolic."""
CHECK_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
"""How close ONNX Runtime's float32 logits must be to PyTorch's on the example input for the export to be accepted:
the same float32 operations in another order (fused kernels, other reduction orders) differ by a few ulps per
operation; 1e-4 leaves a margin of 25x or more over the 1e-6 to 4e-6 seen on the tested families, and is far below a
difference that could change a prediction."""


class OnnxExportError(ValueError):
    """A model folder that cannot be exported to ONNX, or a missing dependency: one line that names the fix."""


def missing_onnx_packages() -> list[str]:
    """The packages of [`ONNX_PACKAGES`] that cannot be imported here."""
    return [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]


def require_onnx() -> None:
    """Raise [`OnnxExportError`] naming the missing packages and the extra that installs them."""
    missing = missing_onnx_packages()
    if missing:
        raise OnnxExportError(
            f"ONNX export needs {', '.join(missing)}: pip install \"smile_hf[onnx]\" (onnx, onnxscript, onnxruntime)."
        )


class _Logits(nn.Module):
    """The classifier with one tensor in and one out: the graph's `pixel_values` -> `logits`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _load_model(model_dir: str) -> nn.Module:
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise OnnxExportError(
            f"'{model_dir}' is not an exported model folder (no config.json): pass the --output_dir of a run, or a "
            "folder written by save_model / save_pretrained."
        )
    try:
        return AutoModelForImageClassification.from_pretrained(model_dir).eval()
    except (OSError, ValueError) as error:
        raise OnnxExportError(f"Cannot load the image classifier of '{model_dir}': {str(error).splitlines()[0]}") from error


def load_processor(model_dir: str):
    """The folder's image processor (`preprocessor_config.json`), or `None` when it has none."""
    if not os.path.isfile(os.path.join(model_dir, "preprocessor_config.json")):
        return None
    return AutoImageProcessor.from_pretrained(model_dir)


def example_input(model: nn.Module, processor, batch_size: int = EXPORT_BATCH) -> torch.Tensor:
    """A random `pixel_values` batch of the size the model is fed: what `processor` makes of an image, else the
    config's `image_size` and `num_channels`."""
    if processor is not None:
        shape = processor(images=Image.new("RGB", (256, 256)), return_tensors="pt")["pixel_values"].shape[1:]
    else:
        config = model.config
        size = getattr(config, "image_size", None)
        if size is None:
            raise OnnxExportError(
                "The folder has no preprocessor_config.json and its config has no image_size: save the image processor "
                "beside the model (trainer.save_model with processing_class, or processor.save_pretrained)."
            )
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = (getattr(config, "num_channels", 3), height, width)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, *shape, generator=generator)


def check_logits(model: nn.Module, pixel_values: torch.Tensor) -> None:
    """Raise [`OnnxExportError`] when `model`'s output has no `logits` (the graph's output; `pipeline()` reads it too)."""
    with torch.no_grad():
        output = model(pixel_values=pixel_values[:1])
    if getattr(output, "logits", None) is None:
        raise OnnxExportError(
            f"{type(model).__name__} returns a {type(output).__name__} without `logits` (transformers' "
            "image-classification pipeline cannot read it either): this model type cannot be exported as a classifier."
        )


def export_model(model: nn.Module, pixel_values: torch.Tensor, path: str | os.PathLike) -> str:
    """Trace `model` (an image classifier in eval mode) on `pixel_values` with `torch.onnx.export(dynamo=True)` and
    save the graph to `path`, weights included (one file): input `pixel_values` with a dynamic batch axis, output
    `logits`. Returns `path`."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            _Logits(model).eval(), (pixel_values,), dynamo=True, input_names=["pixel_values"], output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: batch}}, verbose=False,
        )  # fmt: skip
    program.save(str(path), external_data=False)
    return str(path)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU `InferenceSession` of `path` (`threads`: intra-op threads, default ONNX Runtime's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, pixel_values: torch.Tensor | np.ndarray) -> np.ndarray:
    """The logits an ONNX Runtime session of an exported classifier gives for a `pixel_values` batch."""
    array = pixel_values.numpy() if isinstance(pixel_values, torch.Tensor) else np.asarray(pixel_values)
    return session.run(["logits"], {"pixel_values": array.astype(np.float32, copy=False)})[0]


def check_export(model: nn.Module, path: str | os.PathLike, pixel_values: torch.Tensor) -> float:
    """Compare ONNX Runtime's logits of `path` with `model`'s on `pixel_values`, and on its first image alone (the
    batch axis is dynamic); raise [`OnnxExportError`] past [`CHECK_TOLERANCE`]. Returns the largest difference."""
    session = onnx_session(path)
    worst = 0.0
    for batch in (pixel_values, pixel_values[:1]):
        with torch.no_grad():
            expected = model(pixel_values=batch).logits.numpy()
        worst = max(worst, _check_close(onnx_logits(session, batch), expected, path))
    return worst


def _check_close(got: np.ndarray, expected: np.ndarray, path: str | os.PathLike) -> float:
    """The largest difference of ONNX Runtime's logits `got` from PyTorch's `expected`; an [`OnnxExportError`] past
    [`CHECK_TOLERANCE`]."""
    if got.shape != expected.shape or not np.allclose(got, expected, **CHECK_TOLERANCE):
        raise OnnxExportError(
            f"ONNX Runtime's logits of {path} differ from PyTorch's (shape {got.shape} vs {expected.shape}, largest "
            f"difference {np.abs(got - expected).max() if got.shape == expected.shape else float('nan'):.3g}): "
            "this model does not export faithfully with this torch / onnxscript."
        )
    return float(np.abs(got - expected).max())


# ---- text classifiers -----------------------------------------------------------------------------------------------

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""The inputs of a text classifier's graph, those of them its tokenizer gives."""
EXAMPLE_TEXTS = ("A short text.", "A longer text to classify, so that the batch is padded.")
"""What a text classifier's graph is traced on (two rows of different lengths: both axes stay symbolic)."""


class _TextLogits(nn.Module):
    """A text classifier with tensors in (`names`, in order) and one out: `logits`."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def text_example_input(model_dir: str) -> dict[str, torch.Tensor]:
    """The folder's tokenizer's [`TEXT_INPUTS`] of [`EXAMPLE_TEXTS`], padded: what the graph is traced on."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise OnnxExportError(
            f"'{model_dir}' has no readable tokenizer ({str(error).splitlines()[0]}): save it beside the model."
        ) from error
    encoded = tokenizer(list(EXAMPLE_TEXTS), padding=True, return_tensors="pt")
    return {name: encoded[name] for name in TEXT_INPUTS if name in encoded}


def export_text_model(model: nn.Module, inputs: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Trace the text classifier `model` (eval mode) on `inputs` with `torch.onnx.export(dynamo=True)` and save the
    graph to `path` (one file): the inputs' names, batch and sequence axes dynamic (the sequence up to the model's
    `max_position_embeddings`), output `logits`. Returns `path`."""
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", max=getattr(model.config, "max_position_embeddings", None) or 512)
    with torch.no_grad():
        program = torch.onnx.export(
            _TextLogits(model, list(inputs)).eval(), tuple(inputs.values()), dynamo=True, input_names=list(inputs),
            output_names=["logits"], dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in inputs),), verbose=False,
        )  # fmt: skip
    program.save(str(path), external_data=False)
    return str(path)


def check_text_export(model: nn.Module, path: str | os.PathLike, inputs: dict[str, torch.Tensor]) -> float:
    """Compare ONNX Runtime's logits of `path` with `model`'s on `inputs` and on its first row alone, cut to its own
    length (another batch size and sequence length); an [`OnnxExportError`] past [`CHECK_TOLERANCE`]. Returns the
    largest difference."""
    session = onnx_session(path)
    length = int(inputs["attention_mask"][0].sum()) if "attention_mask" in inputs else None
    worst = 0.0
    for batch in (inputs, {name: value[:1, :length] for name, value in inputs.items()}):
        with torch.no_grad():
            expected = model(**batch).logits.numpy()
        got = session.run(["logits"], {name: value.numpy() for name, value in batch.items()})[0]
        worst = max(worst, _check_close(got, expected, path))
    return worst


def export_text_onnx(model_dir: str, path: str, check: bool = True) -> str:
    """[`export_onnx`] of a text classifier: float32 only, its inputs those of the folder's tokenizer."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    inputs = text_example_input(model_dir)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    export_text_model(model, inputs, path)
    if check:
        check_text_export(model, path, inputs)
    if os.path.samefile(os.path.dirname(os.path.abspath(path)), model_dir):
        update_card(model_dir, {os.path.basename(path): FILE_DESCRIPTIONS[ONNX_FILE]}, text_inputs=list(inputs))
    return path


class _Batches:
    """ONNX Runtime's `CalibrationDataReader` protocol over a `pixel_values` array, one image at a time."""

    def __init__(self, pixel_values: np.ndarray):
        self._batches = iter([{"pixel_values": image[None].astype(np.float32)} for image in pixel_values])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def quantize_onnx(
    path: str | os.PathLike,
    quantize: str = "int8",
    output: str | os.PathLike | None = None,
    calibration: np.ndarray | None = None,
) -> str:
    """Quantize the exported graph `path` to int8 with ONNX Runtime into `output` (default: [`QUANTIZED_FILES`]
    beside it). Without `calibration`: dynamic quantization (int8 weights, activations quantized per batch at run
    time, no data needed). With `calibration` (a `pixel_values` array of a few hundred images the processor made):
    static quantization (QDQ, activation ranges fixed from those images, after ONNX Runtime's pre-processing), which
    quantizes convolutions into kernels that are fast on CPUs. Returns the path written."""
    if quantize not in QUANTIZED_FILES:
        raise OnnxExportError(f"quantize={quantize!r} is not supported: use one of {', '.join(QUANTIZED_FILES)}.")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output = str(output or Path(path).with_name(QUANTIZED_FILES[quantize]))
    if calibration is None:
        quantize_dynamic(str(path), output, weight_type=QuantType.QInt8)
        return output
    prepared = output + ".pre.onnx"
    try:
        quant_pre_process(str(path), prepared)
        quantize_static(
            prepared, output, _Batches(np.asarray(calibration)), quant_format=QuantFormat.QDQ,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
        )  # fmt: skip
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)
    return output


def calibration_pixels(model_dir: str, images: str | Sequence[Image.Image | str], limit: int = 256) -> np.ndarray:
    """`pixel_values` of up to `limit` calibration images (a folder, searched recursively, or a list of PIL images or
    files), evenly spaced over them (so over every class folder), through the folder's image processor."""
    if isinstance(images, (str, os.PathLike)):
        from .data import image_files

        if not os.path.isdir(images):
            raise OnnxExportError(f"--calibration_dir '{images}' is not a folder of images.")
        images = image_files(str(images))
    images = list(images)
    images = images[:: max(1, len(images) // limit)][:limit]
    if not images:
        raise OnnxExportError("No calibration images: pass a folder holding a few hundred images of the task.")
    processor = load_processor(model_dir)
    if processor is None:
        raise OnnxExportError(f"'{model_dir}' has no preprocessor_config.json: static quantization needs it.")
    return pixel_values_of(processor, images)


def pixel_values_of(processor, images: Sequence[Image.Image | str]) -> np.ndarray:
    """`processor`'s `pixel_values` (numpy) of PIL images or image files, each converted to RGB."""
    opened = [Image.open(i) if isinstance(i, (str, os.PathLike)) else i for i in images]
    return processor(images=[i.convert("RGB") for i in opened], return_tensors="np")["pixel_values"]


def update_card(model_dir: str | os.PathLike, files: dict[str, str], text_inputs: Sequence[str] | None = None) -> bool:
    """Add (or refresh) the ONNX section of the folder's model card, `README.md`: `files` maps each ONNX file to
    what it is; `text_inputs` are the graph's inputs when the model is a text classifier. Returns whether there was a
    card to update."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    section = onnx_text_card_section(files, text_inputs) if text_inputs else onnx_card_section(files)
    card.write_text(replace_card_section(text, ONNX_CARD_SECTION, section), encoding="utf-8")
    return True


def push_onnx(model_dir: str | os.PathLike, repo_id: str, files: Sequence[str], revision: str | None = None):
    """Upload the ONNX `files` of `model_dir` and its model card (`README.md`, with the ONNX section) to the Hub model
    repository `repo_id` (created if missing), as one commit. Returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    card = ["README.md"] if os.path.isfile(os.path.join(model_dir, "README.md")) else []
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(model_dir), allow_patterns=[*files, *card], revision=revision,
        commit_message=f"ONNX export ({', '.join(files)})",
    )  # fmt: skip


def export_onnx(
    model_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    quantize: str | None = None,
    calibration_images: str | Sequence[Image.Image | str] | None = None,
    check: bool = True,
) -> str:
    """Export the image classifier saved in `model_dir` to ONNX.

    The model is exported as saved (a temperature folded into the head is kept), with a dynamic batch axis and the
    input size of the folder's image processor. Beside the model, the folder's `README.md` (when there is one) gets
    a section naming the ONNX files and how to run them.

    Args:
        model_dir: a folder written by `save_model` / `save_pretrained` (a run's `--output_dir`).
        output: where to write the graph; default `<model_dir>/model.onnx`.
        quantize: `"int8"` also writes an int8 copy (`model.int8.onnx` beside `output`): statically quantized with
            `calibration_images`, else dynamically (see [`quantize_onnx`]).
        calibration_images: a folder of images of the task (or a list of PIL images or files), up to 256 of them
            read through the folder's image processor, for static int8 quantization.
        check: compare ONNX Runtime's logits with PyTorch's on a random batch and on one image (within
            [`CHECK_TOLERANCE`]) before returning.

    Returns:
        `str`: the path of the float32 graph.
    """
    require_onnx()
    if quantize is not None and quantize not in QUANTIZED_FILES:
        raise OnnxExportError(f"--quantize {quantize} is not supported: use one of {', '.join(QUANTIZED_FILES)}.")
    if calibration_images is not None and quantize is None:
        raise OnnxExportError("Calibration images are for static quantization: pass --quantize int8 with them.")
    model_dir = str(model_dir)
    path = str(output or os.path.join(model_dir, ONNX_FILE))
    if text := saved_text_classifier(model_dir):
        if quantize is not None:
            raise OnnxExportError(f"--quantize: a text classifier ({text}) is exported in float32 only: drop it.")
        return export_text_onnx(model_dir, path, check)
    calibration = None if calibration_images is None else calibration_pixels(model_dir, calibration_images)
    model = _load_model(model_dir)
    pixel_values = example_input(model, load_processor(model_dir))
    check_logits(model, pixel_values)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    export_model(model, pixel_values, path)
    if check:
        check_export(model, path, pixel_values)
    files = {os.path.basename(path): FILE_DESCRIPTIONS[ONNX_FILE]}
    if quantize:
        quantized = quantize_onnx(path, quantize, calibration=calibration)
        files[os.path.basename(quantized)] = FILE_DESCRIPTIONS[quantize + ("" if calibration is None else "-static")]
    if os.path.samefile(os.path.dirname(os.path.abspath(path)), model_dir):
        update_card(model_dir, files)
    return path


class OnnxImageClassifier:
    """Classify images with an exported `model.onnx` on ONNX Runtime, as `pipeline("image-classification")` does
    with the PyTorch model: the folder's image processor, then softmax over the logits, the labels of `config.json`.

    Args:
        model_dir: the model folder (its `config.json` and `preprocessor_config.json`).
        file: the ONNX file in it, e.g. `"model.int8.onnx"`; default [`ONNX_FILE`].
        threads: ONNX Runtime's intra-op threads (default: its own choice).

    Example:

    ```python
    classifier = OnnxImageClassifier("runs/digits-smile")
    classifier("my_images/3.png", top_k=3)  # [{"label": "3", "score": 0.97}, ...]
    ```
    """

    def __init__(self, model_dir: str | os.PathLike, file: str = ONNX_FILE, threads: int | None = None):
        require_onnx()
        path = os.path.join(model_dir, file)
        if not os.path.isfile(path):
            raise OnnxExportError(f"No {file} in '{model_dir}': run smile-hf export {model_dir} --format onnx first.")
        self.processor = load_processor(str(model_dir))
        if self.processor is None:
            raise OnnxExportError(f"'{model_dir}' has no preprocessor_config.json: save the image processor beside it.")
        config = AutoConfig.from_pretrained(model_dir)
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.session = onnx_session(path, threads)

    def logits(self, images: Sequence[Image.Image | str]) -> np.ndarray:
        """The logits of a batch of PIL images (or image paths), n x classes."""
        return onnx_logits(self.session, pixel_values_of(self.processor, images))

    def __call__(self, images: Image.Image | str | Sequence[Image.Image | str], top_k: int = 5):
        """The `top_k` most probable classes of one image (a list of `{"label", "score"}`), or of each of a list of
        images (a list of such lists)."""
        single = isinstance(images, (Image.Image, str, os.PathLike))
        probabilities = softmax(self.logits([images] if single else list(images)))
        top_k = min(top_k, len(self.labels))
        results = [
            [{"label": self.labels[j], "score": float(row[j])} for j in np.argsort(-row, kind="stable")[:top_k]]
            for row in probabilities
        ]
        return results[0] if single else results


def build_parser(prog: str = "smile-hf export"):
    """The parser of `smile-hf export RUN_DIR --format onnx [--quantize int8] [--output PATH]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a saved image classifier (a run's --output_dir) to ONNX: model.onnx beside it, with a "
        "dynamic batch axis, checked on ONNX Runtime against PyTorch; the folder's model card gets an ONNX section.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="The model folder (config.json, model.safetensors, ...).")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="Export format (default: onnx).")
    parser.add_argument("--quantize", choices=tuple(QUANTIZED_FILES), default=None,
                        help="Also write a quantized copy: int8 -> model.int8.onnx (ONNX Runtime quantization: static with "
                        "--calibration_dir, else dynamic).")
    parser.add_argument("--calibration_dir", default=None,
                        help="Images of the task (a folder, searched recursively; up to 256 are read) to calibrate "
                        "static int8 quantization. Without it, --quantize int8 is dynamic.")  # fmt: skip
    parser.add_argument("--output", default=None, help=f"Where to write the graph (default: RUN_DIR/{ONNX_FILE}).")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", default=None,
                        help="Upload the ONNX files and the updated model card to this Hub model repository (e.g. the "
                        "run's --hub_model_id); the model itself is not uploaded again.")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "smile-hf export") -> str:
    """`smile-hf export`: parse `argv`, export, print the files written. Returns the float32 graph's path."""
    args = build_parser(prog).parse_args(argv)
    inside = args.output is None or os.path.dirname(os.path.abspath(args.output)) == os.path.abspath(args.run_dir)
    if args.push_to_hub and not inside:
        raise OnnxExportError("--push_to_hub uploads files of RUN_DIR: leave --output out (or write inside RUN_DIR).")
    path = export_onnx(args.run_dir, output=args.output, quantize=args.quantize, calibration_images=args.calibration_dir)
    written = [path] + ([str(Path(path).with_name(QUANTIZED_FILES[args.quantize]))] if args.quantize else [])
    for file in written:
        print(f"{file} ({os.path.getsize(file) / 1e6:.2f} MB)", flush=True)
    if args.push_to_hub:
        push_onnx(args.run_dir, args.push_to_hub, [os.path.basename(f) for f in written])
        print(f"Uploaded {', '.join(os.path.basename(f) for f in written)} and README.md to {args.push_to_hub}")
    return path
