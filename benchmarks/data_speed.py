# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Per-image throughput of the training transform (JPEG bytes in, a normalised 3 x 224 x 224 tensor out: decode,
resize to 256 x 256, random crop, flip, normalise) on generated JPEGs, one thread (as in one DataLoader worker).

Pipelines compared, on the same images:

- `float resize (previous)`: the baseline, the pipeline before the uint8 change: full decode, conversion of the
  full-resolution image to float, anti-aliased bilinear resize of the float tensor, crop, flip, normalise;
- `PIL uint8 resize (eval transform)`: full decode, PIL bilinear resize of the uint8 image, then conversion
  ([`smile_hf.data.ImageTransform`] with `train=False`: what evaluation and the exported processor do; center crop
  instead of the random one, at the same cost);
- `torch uint8 resize, full decode`: full decode, torch's anti-aliased bilinear resize of the uint8 tensor, then
  conversion (the train transform with `jpeg_draft=False`);
- `torch uint8 resize + JPEG draft (train default)`: the same after a reduced-scale JPEG decode when the image is at
  least twice the resize size (what `BatchTransform` does for training);
- `torchvision v2`: PIL decode, `v2.PILToTensor`, `v2.Resize(antialias=True)` on uint8, `RandomCrop`,
  `RandomHorizontalFlip`, `ToDtype(float32, scale=True)`, `Normalize`; only where torchvision imports (the output
  says why it was not run otherwise).

The images are smooth random fields (low-resolution noise upsampled, plus fine noise) saved as JPEG quality 90: their
decoding cost is in the range of photographs', not of pure noise. Each pipeline runs over all images of a size once
per round, the pipelines in a shuffled order each round; images/s is reported as the median (and quartiles) over
rounds.

    python -m benchmarks.data_speed          # writes benchmarks/results/data_speed.{json,md}, ~1 minute
    python -m benchmarks.data_speed --count 4 --rounds 2 --sizes 64x48 --output /tmp/d.json --markdown /tmp/d.md
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from smile_hf.data import (
    ImageTransform,
    TransformConfig,
    decode_image,
    normalize,
    pil_to_tensor,
    random_crop,
    resize,
)

from .common import RESULTS_DIR, environment, markdown_table, quantiles, write_json, write_text

CONFIG = TransformConfig(crop_size=(224, 224), resize_size=(256, 256))
BASELINE = "float resize (previous)"


def make_jpegs(width: int, height: int, count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEG files (quality 90) of `width` x `height`: upsampled low-resolution noise plus fine noise."""
    rng = np.random.default_rng(seed)
    files = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        files.append(buffer.getvalue())
    return files


def float_resize_pipeline(config: TransformConfig) -> Callable[[bytes, torch.Generator], torch.Tensor]:
    """The baseline: the train transform as it was before resizing moved to uint8 (full decode, float, resize)."""

    def run(data: bytes, generator: torch.Generator) -> torch.Tensor:
        pixels = resize(pil_to_tensor(decode_image({"bytes": data})), config.resize_size)
        pixels = random_crop(pixels, config.crop_size, generator)
        if bool(torch.rand((), generator=generator) < 0.5):
            pixels = pixels.flip(-1)
        return normalize(pixels, config.mean, config.std)

    return run


def smile_hf_pipeline(
    config: TransformConfig, jpeg_draft: bool, train: bool = True
) -> Callable[[bytes, torch.Generator], torch.Tensor]:
    """smile_hf's train (or eval) transform, decoding as `BatchTransform` does (reduced-scale JPEG decode when
    allowed)."""
    transform = ImageTransform(config, train=train, jpeg_draft=jpeg_draft)

    def run(data: bytes, generator: torch.Generator) -> torch.Tensor:
        return transform(decode_image({"bytes": data}, transform.draft_size), generator)

    return run


def torchvision_pipeline(config: TransformConfig) -> tuple[Callable | None, str]:
    """torchvision `v2`'s equivalent of the train transform, or (None, why it cannot run here)."""
    try:
        from torchvision.transforms import v2
    except Exception as error:  # not installed, or built for another torch
        return None, f"torchvision does not import here ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    transform = v2.Compose([
        v2.PILToTensor(), v2.Resize(list(config.resize_size), antialias=True), v2.RandomCrop(list(config.crop_size)),
        v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std),
    ])  # fmt: skip

    def run(data: bytes, generator: torch.Generator) -> torch.Tensor:
        return transform(Image.open(io.BytesIO(data)).convert("RGB"))

    return run, "ran"


def measure(pipelines: dict[str, Callable], files: list[bytes], rounds: int, seed: int = 0) -> dict[str, dict]:
    """Images per second of each pipeline over `files`, one value per round (pipelines shuffled each round)."""
    order, rates = list(pipelines), {name: [] for name in pipelines}
    shuffler = random.Random(seed)
    for name in order:  # warm-up: first calls allocate and load code
        pipelines[name](files[0], torch.Generator().manual_seed(0))
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            for data in files:
                pipelines[name](data, generator)
            rates[name].append(len(files) / (time.perf_counter() - start))
    return {name: quantiles(values) for name, values in rates.items()}


def report(payload: dict) -> str:
    """The markdown report of a run's results."""
    rows = []
    for size, by_pipeline in payload["results"].items():
        base = by_pipeline[BASELINE]["median"]
        for name, stats in by_pipeline.items():
            rows.append([
                size, name, f"{stats['median']:.1f} ({stats['p25']:.1f}-{stats['p75']:.1f})",
                f"{1000 / stats['median']:.2f}", f"{stats['median'] / base:.2f}x",
            ])  # fmt: skip
    table = markdown_table(["image", "pipeline", "images/s median (p25-p75)", "ms / image", "vs baseline"], rows, "llrrr")
    env = payload["environment"]
    return "\n".join([
        "# Training-transform throughput (JPEG bytes to a normalised 3 x 224 x 224 tensor)", "",
        f"{payload['count']} generated JPEGs per size, {payload['rounds']} rounds, {env['torch_threads']} torch thread; "
        f"{env['processor']}, {env['cpu_count']} CPUs, torch {env['torch']}. Baseline: `{BASELINE}`.", "",
        table, "", f"torchvision v2: {payload['torchvision']}.",
    ])  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500x375,2400x1600", help="Comma-separated WIDTHxHEIGHT of the JPEGs.")
    parser.add_argument("--count", type=int, default=32, help="JPEGs per size.")
    parser.add_argument("--rounds", type=int, default=7, help="Passes over the images per pipeline.")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "data_speed.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS_DIR, "data_speed.md"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker's view
    pipelines = {
        BASELINE: float_resize_pipeline(CONFIG),
        "PIL uint8 resize (eval transform)": smile_hf_pipeline(CONFIG, jpeg_draft=False, train=False),
        "torch uint8 resize, full decode": smile_hf_pipeline(CONFIG, jpeg_draft=False),
        "torch uint8 resize + JPEG draft (train default)": smile_hf_pipeline(CONFIG, jpeg_draft=True),
    }
    torchvision_run, torchvision_status = torchvision_pipeline(CONFIG)
    if torchvision_run is not None:
        pipelines["torchvision v2"] = torchvision_run
    print(f"torchvision v2: {torchvision_status}", flush=True)
    results = {}
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        results[size] = measure(pipelines, make_jpegs(width, height, args.count), args.rounds)
        print(f"{size}: " + ", ".join(f"{k} {v['median']:.1f}/s" for k, v in results[size].items()), flush=True)
    payload = {
        "environment": environment(), "count": args.count, "rounds": args.rounds, "torchvision": torchvision_status,
        "config": {"resize_size": list(CONFIG.resize_size), "crop_size": list(CONFIG.crop_size)}, "results": results,
    }  # fmt: skip
    write_json(args.output, payload)
    text = report(payload)
    write_text(args.markdown, text)
    print(text)
    return payload


if __name__ == "__main__":
    main()
