# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""The unlabelled stream of [`SmileTrainer`]: a batch of unlabelled images for every micro-batch, read without any
label, whose content is fixed by the training position alone.

Draw `k` (micro-batch `m` of optimizer step `s`: `k = s x gradient_accumulation_steps + m`) of process `r` of `W`
reads the positions `[(k W + r) b, (k W + r + 1) b)` of the endless sequence made of one permutation of the dataset
per pass, the permutation of pass `e` drawn from (seed, e). So the processes read disjoint parts of each pass (as a
`DistributedSampler` shards an epoch), and a run resumed from a checkpoint at step `s` reads exactly what the
uninterrupted run read: the position in the stream is derived from `global_step`, which the checkpoint holds. The
per-image augmentation of a `set_transforms` dataset follows the pass (its epoch), as the training set's follows the
epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .data import IMAGENET_MEAN, IMAGENET_STD
from .methods import unlabeled_methods
from .randaugment import strong_augment

UNLABELED_STREAM_KEY = 1
"""Mixed into the seeds of the unlabelled stream's permutations and mixes, so they differ from the labelled ones."""


def check_unlabeled(regularizer: Any, args: Any, unlabeled_dataset: Any) -> None:
    """Refuse, in one line, an `unlabeled_dataset` for a method that cannot use it, a method that needs one without
    it, and an `unlabeled_batch_ratio` that nothing would read."""
    method = args.method
    if unlabeled_dataset is not None and regularizer.unlabeled_views is None:
        raise ValueError(
            f"Method '{method}' cannot use unlabelled images: leave `unlabeled_dataset` unset, or use a method that "
            f"uses them ({', '.join(unlabeled_methods())})."
        )
    if unlabeled_dataset is None and regularizer.requires_unlabeled:
        raise ValueError(f"Method '{method}' trains on unlabelled images: pass `unlabeled_dataset`.")
    if unlabeled_dataset is None and args.unlabeled_batch_ratio is not None:
        raise ValueError("`unlabeled_batch_ratio` is set but there is no `unlabeled_dataset`: pass one, or unset it.")


def view_generator(seed: int, step: int, micro_step: int, rank: int) -> torch.Generator:
    """The torch generator of the strong views of a micro-batch's unlabelled images, determined by the training
    position (as the mixes are), so that a resumed run draws the same views."""
    entropy = [seed, step, micro_step, rank, UNLABELED_STREAM_KEY + 1]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def unlabeled_batch_size(ratio: float, labelled_batch_size: int) -> int:
    """`round(ratio x labelled_batch_size)` unlabelled images per micro-batch, at least 1."""
    return max(1, int(round(ratio * labelled_batch_size)))


class UnlabeledStream:
    """Batches of unlabelled images (`pixel_values` only) determined by (seed, draw, rank).

    Args:
        dataset: a `datasets.Dataset` (its transform returning `pixel_values`) or any map-style dataset whose items are
            mappings with `pixel_values` or image tensors. Only `pixel_values` is ever read.
        batch_size (`int`): unlabelled images per draw and process.
        seed (`int`): seed of the permutations.
        rank (`int`, defaults to 0), world_size (`int`, defaults to 1): this process and how many share the stream.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if len(dataset) == 0:
            raise ValueError("`unlabeled_dataset` is empty: pass at least one unlabelled image, or leave it unset.")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the dataset in pass `epoch` (kept for the two latest passes)."""
        if epoch not in self._permutations:
            rng = np.random.default_rng([self.seed, epoch, UNLABELED_STREAM_KEY])
            self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
            self._permutations[epoch] = rng.permutation(len(self.dataset))
        return self._permutations[epoch]

    def positions(self, draw: int) -> list[tuple[int, int]]:
        """(pass, dataset index) of each image of draw `draw` on this process."""
        start = (draw * self.world_size + self.rank) * self.batch_size
        size = len(self.dataset)
        return [(p // size, int(self.permutation(p // size)[p % size])) for p in range(start, start + self.batch_size)]

    def batch(self, draw: int, view: int = 0) -> torch.Tensor:
        """The images of draw `draw` on this process, stacked (`batch_size` x C x H x W). `view` > 0 reads the same
        images with another random draw of a `set_transforms` dataset's augmentation (a second view: Mean Teacher);
        a dataset without such a transform returns what it returns again."""
        images: list[torch.Tensor] = []
        positions = self.positions(draw)  # consecutive: the passes do not decrease along the draw
        for epoch in sorted({e for e, _ in positions}):
            images += self._read(epoch, [i for e, i in positions if e == epoch], view)
        return torch.stack(images)

    def _read(self, epoch: int, indices: Sequence[int], view: int) -> list[torch.Tensor]:
        transform = (getattr(self.dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
        if hasattr(transform, "set_epoch"):
            transform.set_epoch(epoch)
        if hasattr(transform, "set_view"):
            transform.set_view(view)
        try:
            if hasattr(self.dataset, "column_names"):  # a datasets.Dataset: one batched read
                return [torch.as_tensor(v) for v in self.dataset[list(indices)]["pixel_values"]]
            return [_pixel_values(self.dataset[i]) for i in indices]
        finally:
            if hasattr(transform, "set_view"):
                transform.set_view(0)


def _pixel_values(item: Any) -> torch.Tensor:
    if isinstance(item, Mapping):
        return torch.as_tensor(item["pixel_values"])
    return torch.as_tensor(item)


def unlabeled_record(trainer: Any) -> dict[str, Any] | None:
    """What a run's `results.json` and card say of its unlabelled images: how many, from where, and how many per
    micro-batch and process (None without them)."""
    stream = getattr(trainer, "unlabeled_stream", None)
    if stream is None:
        return None
    source = getattr(trainer, "unlabeled_source", None) or "unlabeled_dataset"
    return {"images": len(stream), "source": source, "per_batch": stream.batch_size}


def describe_unlabeled(record: dict[str, Any] | None) -> str | None:
    """The card's phrase for [`unlabeled_record`]."""
    if record is None:
        return None
    return f"{record['images']} unlabelled images ({record['source']}), {record['per_batch']} per batch and process"


class UnlabeledStreamMixin:
    """The unlabelled stream of [`SmileTrainer`] (`unlabeled_dataset`): the batch of each micro-batch, mixed among
    itself, or given its strong view or a second view, and the method's terms on it added to the step's loss."""

    unlabeled_dataset: Any = None

    def add_unlabeled_terms(self, output: Any, model: Any, pixel_values: torch.Tensor, step: int, micro_step: int):
        """Add the method's terms of this micro-batch's unlabelled images to `output` (a [`LossOutput`]): its
        `terms`, their weighted sum to its `loss`, and the method's statistics of them to its `statistics`."""
        unlabeled = self._unlabeled_terms(model, pixel_values, step, micro_step)
        output.terms.update(unlabeled.terms)
        output.statistics.update(unlabeled.statistics)
        output.loss = output.loss + sum(weight * value for weight, value in unlabeled.terms.values())

    @property
    def unlabeled_stream(self) -> UnlabeledStream | None:
        """The stream of unlabelled batches of this process (None without `unlabeled_dataset`)."""
        if self.unlabeled_dataset is None:
            return None
        ratio = self.args.unlabeled_batch_ratio or self.regularizer.default_unlabeled_batch_ratio
        size = unlabeled_batch_size(ratio, self.args.per_device_train_batch_size)
        stream = getattr(self, "_unlabeled_stream", None)
        if stream is None or stream.dataset is not self.unlabeled_dataset or stream.batch_size != size:
            args = self.args
            stream = UnlabeledStream(self.unlabeled_dataset, size, args.seed, args.process_index, args.world_size)
            self._unlabeled_stream = stream
        return stream

    def _unlabeled_terms(self, model, pixel_values: torch.Tensor, step: int, micro_step: int):
        """The method's terms on this micro-batch's unlabelled images: draw `step x accumulation + micro_step` of
        the stream, mixed among themselves (a mix of its own, keyed as the labelled one) or with their strong view."""
        args, views = self.args, self.regularizer.unlabeled_views
        draw = step * args.gradient_accumulation_steps + micro_step
        images = self.unlabeled_stream.batch(draw).to(device=pixel_values.device, dtype=pixel_values.dtype)
        mix = other_view = None
        if views == "mix":
            mix = self.loss_fn.draw_mix(images, model, step, micro_step, stream=UNLABELED_STREAM_KEY)
        elif views == "weak_strong":
            generator = view_generator(args.seed, step, micro_step, args.process_index)
            other_view = self.strong_view(images, generator)
        else:  # "two_views": the same images, another draw of the training transform
            other_view = self.unlabeled_stream.batch(draw, view=1).to(device=images.device, dtype=images.dtype)
        return self.loss_fn.unlabeled_terms(model, images, mix, other_view, step=step, max_steps=self.state.max_steps)

    def strong_view(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """FixMatch's strong augmentation ([`smile_hf.randaugment.strong_augment`]) of normalised `images`, with the
        image processor's mean and standard deviation."""
        processor = self.processing_class
        mean = getattr(processor, "image_mean", None) or IMAGENET_MEAN
        std = getattr(processor, "image_std", None) or IMAGENET_STD
        return strong_augment(images, mean, std, generator)
