# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Pre-train the small source checkpoint that the offline demo (`examples/compare_methods.py`) transfers from.

A tiny `ResNetForImageClassification` (3 stages of one basic block, 32 x 32 RGB input, last feature map 2 x 2) is
trained on Fashion-MNIST, read from Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`,
files in /usr/share/datasets/fashion-mnist). The images go through the same torch-only pipeline as the target data
(`smile_hf.data`: grayscale -> RGB, resize to 37 x 37, random crop 32 + flip for training, center crop for test).

Writes `config.json`, `model.safetensors`, `preprocessor_config.json` and a model card `README.md` to the output
folder, and prints the test accuracy. Regenerate the shipped checkpoint with:

    python scripts/train_source_model.py --output_dir checkpoints/fmnist-resnet-tiny
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

from smile_hf.data import center_crop, normalize, random_crop, resize

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_SIZE = 32
RESIZE_SIZE = 37  # IMAGE_SIZE / (224 / 256), the reference's crop ratio
MEAN = STD = None  # measured on the training images (grayscale, replicated to the three channels)


def read_idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    _, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if dtype_code != 0x08:
        raise ValueError(f"{path}: only unsigned byte IDX files are supported.")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir: str, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images N x 1 x RESIZE x RESIZE in [0, 1], labels N) of the 'train' or 't10k' split, resized once."""
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    pixels = torch.from_numpy(images.copy()).float().div_(255.0)[:, None]
    resized = torch.cat([resize(chunk, (RESIZE_SIZE, RESIZE_SIZE)) for chunk in pixels.split(4096)])
    return resized, torch.from_numpy(labels.astype(np.int64))


def build_model(width: int, seed: int) -> ResNetForImageClassification:
    """The tiny ResNet: stem (stride 4) + 3 stages (strides 1, 2, 2): a 32 x 32 input gives a 2 x 2 feature map."""
    torch.manual_seed(seed)
    config = ResNetConfig(
        num_channels=3,
        embedding_size=width,
        hidden_sizes=[width, 2 * width, 4 * width],
        depths=[1, 1, 1],
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        num_labels=len(FASHION_MNIST_CLASSES),
        id2label=dict(enumerate(FASHION_MNIST_CLASSES)),
        label2id={name: i for i, name in enumerate(FASHION_MNIST_CLASSES)},
    )
    return ResNetForImageClassification(config)


def train_batch(images: torch.Tensor, mean: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """Random crop + horizontal flip per image, replicate to RGB, normalise."""
    crops = torch.stack([random_crop(image, (IMAGE_SIZE, IMAGE_SIZE), generator) for image in images])
    flip = torch.rand(len(crops), generator=generator) < 0.5
    crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    return normalize(crops.expand(-1, 3, -1, -1), (mean,) * 3, (std,) * 3)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> float:
    """Top-1 accuracy with the eval pipeline (center crop)."""
    model.eval()
    correct = 0
    for chunk, target in zip(images.split(1000), labels.split(1000)):
        pixels = normalize(center_crop(chunk, (IMAGE_SIZE, IMAGE_SIZE)).expand(-1, 3, -1, -1), (mean,) * 3, (std,) * 3)
        correct += (model(pixel_values=pixels).logits.argmax(-1) == target).sum().item()
    return correct / len(labels)


def train(model, images, labels, args, mean: float, std: float) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = len(images) // args.batch_size
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total, pct_start=0.15)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            logits = model(pixel_values=train_batch(images[batch], mean, std, generator)).logits
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if step % 100 == 0:
                print(
                    f"epoch {epoch} step {step}/{steps_per_epoch} loss {loss.item():.3f} ({time.time() - start:.0f}s)"
                )


def write_model_card(results: dict, paths: list[str]) -> None:
    """A short model card with the training recipe and the measured accuracy, written to each of `paths`."""
    card = f"""---
library_name: transformers
pipeline_tag: image-classification
tags: [smile_hf, resnet, fashion-mnist, tiny]
datasets: [zalando-datasets/fashion_mnist]
license: apache-2.0
model-index:
- name: {results["name"]}
  results:
  - task: {{type: image-classification}}
    dataset: {{type: zalando-datasets/fashion_mnist, name: Fashion-MNIST, split: test}}
    metrics:
    - {{type: accuracy, value: {results["test_accuracy"]:.4f}}}
---

# {results["name"]}

A tiny ResNet ({results["num_parameters"]:,} parameters) pre-trained on Fashion-MNIST, shipped with smile_hf as an
offline source checkpoint (`examples/compare_methods.py`'s demo, `benchmarks/`). Not meant for any real use.

- Architecture: `ResNetForImageClassification`, embedding {results["width"]}, hidden sizes {results["hidden_sizes"]},
  one basic block per stage; input 3 x {IMAGE_SIZE} x {IMAGE_SIZE}, last feature map 2 x 2.
- Data: Fashion-MNIST (Debian package `dataset-fashion-mnist`), grayscale replicated to RGB, resized to
  {RESIZE_SIZE} x {RESIZE_SIZE}; train: random crop {IMAGE_SIZE} + horizontal flip; test: center crop.
  Normalisation mean {results["mean"]:.4f}, std {results["std"]:.4f} (per channel).
- Training: SGD (Nesterov momentum 0.9, weight decay 5e-4), one-cycle lr (max {results["lr"]}),
  batch {results["batch_size"]}, {results["epochs"]} epochs, seed {results["seed"]}: {results["train_seconds"]:.0f} s
  on 2 shared CPU cores with one torch thread.
- **Fashion-MNIST test accuracy: {100 * results["test_accuracy"]:.2f}%** (10,000 test images).

Regenerate (a few minutes on 2 CPU cores; one thread is fastest for so small a model):

    apt-get install dataset-fashion-mnist
    OMP_NUM_THREADS=1 python scripts/train_source_model.py --output_dir checkpoints/{results["name"]}{results["width_flag"]}

Exact weights (and the last digits of the accuracy) may differ across machines and torch builds.
"""
    for path in paths:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="checkpoints/fmnist-resnet-tiny")
    parser.add_argument("--data_dir", default=FASHION_MNIST_DIR)
    parser.add_argument("--width", type=int, default=16, help="channels of the stem and first stage")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_train_samples", type=int, default=None, help="for quick checks")
    parser.add_argument(
        "--model_card", default="model_cards/fmnist-resnet-tiny.md", help="second copy of the model card (README.md)"
    )
    args = parser.parse_args()
    if not os.path.isdir(args.data_dir):
        parser.error(f"{args.data_dir} not found: install Debian's dataset-fashion-mnist or pass --data_dir.")

    train_images, train_labels = load_split(args.data_dir, "train")
    test_images, test_labels = load_split(args.data_dir, "t10k")
    if args.max_train_samples:
        train_images, train_labels = train_images[: args.max_train_samples], train_labels[: args.max_train_samples]
    mean, std = train_images.mean().item(), train_images.std().item()

    model = build_model(args.width, args.seed)
    start = time.time()
    train(model, train_images, train_labels, args, mean, std)
    seconds = time.time() - start
    accuracy = evaluate(model, test_images, test_labels, mean, std)
    print(f"Fashion-MNIST test accuracy: {accuracy:.4f} ({seconds:.0f}s of training)")

    os.makedirs(args.output_dir, exist_ok=True)
    model.save_pretrained(args.output_dir)
    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=[mean] * 3,
        image_std=[std] * 3,
    )
    processor.save_pretrained(args.output_dir)
    results = {
        "name": os.path.basename(os.path.normpath(args.output_dir)),
        "width_flag": "" if args.width == 16 else f" --width {args.width}",
        "test_accuracy": accuracy,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "width": args.width,
        "hidden_sizes": model.config.hidden_sizes,
        "mean": mean,
        "std": std,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_seconds": seconds,
    }
    with open(os.path.join(args.output_dir, "training_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    write_model_card(results, [os.path.join(args.output_dir, "README.md"), args.model_card])


if __name__ == "__main__":
    main()
