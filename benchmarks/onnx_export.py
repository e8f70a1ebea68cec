# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of the digits demo: file size, CPU latency per image and top-1 for PyTorch, ONNX float32 and ONNX int8
(dynamic and static quantization), all measured in one run on the same inputs.

    python -m benchmarks.onnx_export   # ~3 min on 2 CPU cores, training included -> results/onnx_export.{json,md}

The model is the SMILE run of the calibration demo (the bundled Fashion-MNIST ResNet fine-tuned with SMILE on 10
images per class of digits, 500 steps, the reference recipe; about a minute on 2 CPU cores), trained into `--run_dir` unless it is there already, then exported with
`smile_hf.onnx_export.export_onnx(quantize="int8")` (dynamic int8) and quantized statically with 256 images of the
digits training split. Every model sees the same `pixel_values`: the whole digits evaluation split through the
exported image processor. Latency is per image at batch size 1 and at batch size 64, on one thread (torch and ONNX
Runtime alike), the median of `--rounds` rounds that alternate the models, each the mean of `--repeats` calls.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from transformers import AutoModelForImageClassification

from smile_hf.data import prepare_datasets
from smile_hf.onnx_export import (
    QUANTIZED_FILES,
    export_onnx,
    load_processor,
    onnx_logits,
    onnx_session,
    quantize_onnx,
)

from .common import REPO_ROOT, RESULTS_DIR, environment, log, markdown_table, publish

DEMO_ARGS = [
    "--dataset", "digits", "--train_samples_per_class", "10", "--random_horizontal_flip", "False", "--method", "smile",
    "--reference_recipe", "True", "--max_steps", "500", "--seed", "0",
    "--per_device_eval_batch_size", "256", "--save_strategy", "steps", "--save_steps", "1000", "--report_to", "none",
    "--disable_tqdm", "True",
]  # fmt: skip
"""The SMILE run of the calibration and linearity demos (docs/calibration.md): few-shot digits, 500 steps."""
STATIC_FILE = "model.int8-static.onnx"
CALIBRATION_IMAGES = 256
BATCH_SIZES = (1, 64)


def train_demo(run_dir: str) -> None:
    from smile_hf.run.driver import main as train

    log(f"training the digits demo into {run_dir}")
    train([*DEMO_ARGS, "--output_dir", run_dir], prog="smile-hf train")


def split_pixels(processor, split, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`pixel_values` (through the exported processor, as `pipeline()` and `OnnxImageClassifier` feed the model) and
    labels of a split of the digits preset, evenly spaced up to `limit` images."""
    from datasets import Image as ImageFeature

    split = split.cast_column("image", ImageFeature())
    indices = range(len(split)) if limit is None else range(0, len(split), max(1, len(split) // limit))
    rows = split.select(list(indices)[:limit])
    images = [image.convert("RGB") for image in rows["image"]]
    return processor(images=images, return_tensors="np")["pixel_values"], np.asarray(rows["label"])


def seconds_per_image(run, pixel_values: np.ndarray, batch_size: int, repeats: int) -> float:
    """Mean seconds per image of `repeats` calls of `run` on the first `batch_size` images."""
    inputs = pixel_values[:batch_size]
    run(inputs)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run(inputs)
    return (time.perf_counter() - start) / (repeats * batch_size)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", default=os.path.join(REPO_ROOT, "outputs", "onnx_demo", "digits-smile"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=300, help="Calls per round at batch size 1 (fewer at 64).")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "onnx_export"), help="Path without extension.")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    if not os.path.isfile(os.path.join(args.run_dir, "model.safetensors")):
        train_demo(args.run_dir)
    log("exporting")
    onnx_path = export_onnx(args.run_dir, quantize="int8")
    processor = load_processor(args.run_dir)
    data = prepare_datasets(dataset="digits", disable_tqdm=True)
    calibration, _ = split_pixels(processor, data.train, CALIBRATION_IMAGES)
    static_path = quantize_onnx(onnx_path, "int8", output=os.path.join(args.run_dir, STATIC_FILE), calibration=calibration)
    pixel_values, labels = split_pixels(processor, data.eval)

    model = AutoModelForImageClassification.from_pretrained(args.run_dir).eval()

    @torch.no_grad()
    def pytorch(x: np.ndarray) -> np.ndarray:
        return model(pixel_values=torch.from_numpy(x)).logits.numpy()

    engines = {"PyTorch": (pytorch, os.path.join(args.run_dir, "model.safetensors"))}
    for name, path in (("ONNX fp32", onnx_path), ("ONNX int8 dynamic", os.path.join(args.run_dir, QUANTIZED_FILES["int8"])),
                       ("ONNX int8 static", static_path)):  # fmt: skip
        session = onnx_session(path, threads=1)
        engines[name] = ((lambda s: lambda x: onnx_logits(s, x))(session), path)

    log("top-1 on the digits evaluation split")
    logits = {name: np.concatenate([run(chunk) for chunk in np.array_split(pixel_values, 16)])
              for name, (run, _) in engines.items()}  # fmt: skip
    reference = logits["PyTorch"].argmax(1)
    latency = {name: {b: [] for b in BATCH_SIZES} for name in engines}
    for round_ in range(args.rounds):
        log(f"latency round {round_ + 1}/{args.rounds}")
        for batch_size in BATCH_SIZES:
            repeats = max(3, args.repeats // batch_size)
            for name, (run, _) in engines.items():
                latency[name][batch_size].append(seconds_per_image(run, pixel_values, batch_size, repeats))

    records = []
    for name, (_, path) in engines.items():
        records.append({
            "model": name, "file": os.path.basename(path), "bytes": os.path.getsize(path),
            "top1": float((logits[name].argmax(1) == labels).mean()),
            "agreement_with_pytorch": float((logits[name].argmax(1) == reference).mean()),
            "max_abs_logit_difference": float(np.abs(logits[name] - logits["PyTorch"]).max()),
            "ms_per_image": {str(b): 1e3 * float(np.median(latency[name][b])) for b in BATCH_SIZES},
        })  # fmt: skip
    base = records[0]
    rows = [[
        r["model"], f"`{r['file']}`", f"{r['bytes'] / 1e3:.0f}", f"{r['bytes'] / base['bytes']:.2f}",
        *(f"{r['ms_per_image'][str(b)]:.3f} ({r['ms_per_image'][str(b)] / base['ms_per_image'][str(b)]:.2f}×)"
          for b in BATCH_SIZES),
        f"{100 * r['top1']:.2f}", f"{100 * (r['top1'] - base['top1']):+.2f}", f"{100 * r['agreement_with_pytorch']:.1f}",
        f"{r['max_abs_logit_difference']:.1e}",
    ] for r in records]  # fmt: skip
    env = environment()
    header = ["model", "file", "size (kB)", "size ratio", *(f"ms / image, batch {b} (ratio)" for b in BATCH_SIZES),
              "top-1 (%)", "Δ top-1 (pt)", "same top-1 as PyTorch (%)", "max abs logit diff"]  # fmt: skip
    text = "\n".join([
        "# ONNX export of the digits demo",
        "",
        f"The SMILE digits demo (bundled Fashion-MNIST ResNet, 10 images per class, 500 steps), top-1 on all {len(labels)} "
        f"images of the digits evaluation split, the same `pixel_values` for every model. Static int8: calibrated on "
        f"{len(calibration)} images of the training split. One image is {100 / len(labels):.2f} points of top-1. "
        f"Latency: one thread, median of {args.rounds} interleaved rounds; ratios against PyTorch, measured in the "
        "same run.",
        "",
        markdown_table(header, rows),
        "",
        f"CPU: {env['processor']}, {env['cpu_count']} cores (shared); torch {env['torch']}, onnxruntime "
        f"{__import__('onnxruntime').__version__}.",
    ])  # fmt: skip
    payload = {"command": "python -m benchmarks.onnx_export", "environment": env, "num_eval": int(len(labels)),
               "num_calibration": int(len(calibration)), "rounds": args.rounds, "results": records}  # fmt: skip
    publish(text, payload, args.output + ".json", args.output + ".md")
    return payload


if __name__ == "__main__":
    main()
