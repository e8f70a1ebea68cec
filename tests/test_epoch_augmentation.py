"""Per-example augmentation follows the epoch in DataLoader workers, persistent ones included: the epoch the main
process sets (`TransformEpochCallback`) reaches workers started at the first epoch."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import torch
from datasets import Dataset
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from smile_hf import run as run_smile
from smile_hf.data import (
    BatchTransform,
    ImageTransform,
    TransformConfig,
    TransformEpochCallback,
    augmentation_generator,
    collate,
    with_example_index,
)

from .testing_utils import ON_ACCELERATOR, script_device_args

SEED = 3
CONFIG = TransformConfig(crop_size=(6, 6), resize_size=(9, 9), mean=(0.5,) * 3, std=(0.25,) * 3)


def images(count: int = 6) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (9 + i, 11, 3), dtype=np.uint8)) for i in range(count)]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def expected_epoch(pictures: list[Image.Image], epoch: int) -> torch.Tensor:
    """The epoch's augmented images computed directly: the train transform with each example's own generator."""
    transform = ImageTransform(CONFIG, train=True)
    return torch.stack([transform(p, augmentation_generator(SEED, epoch, i)) for i, p in enumerate(pictures)])


@pytest.mark.cpu_only("the data pipeline runs on the CPU, before the Trainer moves a batch to its device")
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_see_each_epoch(context):
    pictures = images()
    dataset = with_example_index(Dataset.from_dict({"image": [{"bytes": png(p), "path": None} for p in pictures], "label": [0, 1] * 3}))
    dataset.set_transform(BatchTransform(ImageTransform(CONFIG, train=True), "image", "label", "train", seed=SEED))
    callback = TransformEpochCallback(dataset)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate, num_workers=2, persistent_workers=True,
                        multiprocessing_context=context)  # fmt: skip
    seen = []
    for epoch in range(3):
        callback.on_epoch_begin(None, SimpleNamespace(epoch=float(epoch)), None)
        seen.append(torch.cat([batch["pixel_values"] for batch in loader]))
        # the same code on the same CPU in another process: bit for bit
        torch.testing.assert_close(seen[-1], expected_epoch(pictures, epoch), rtol=0, atol=0, msg=f"epoch {epoch}")
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def digits_run(output_dir, *extra: str) -> dict[str, torch.Tensor]:
    run_smile.main([
        "--dataset", "digits", "--train_samples_per_class", "2", "--max_eval_samples", "20", "--method", "smile",
        "--num_train_epochs", "2", "--max_steps", "-1", "--per_device_train_batch_size", "8",
        "--eval_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", "--output_dir", str(output_dir),
        *script_device_args(), *extra,
    ])  # fmt: skip
    return load_file(str(output_dir / "model.safetensors"))


def test_training_with_persistent_workers_matches_the_main_process(tmp_path):
    """Two epochs of 3 steps: the crops and flips of epoch 2 reach persistent workers, so the weights are those of
    loading in the main process (the same augmentation, the same batches in the same order): bit for bit on the CPU;
    on an accelerator 1e-5, room for kernels that accumulate in a varying order (atomic adds). No worker outlives
    the run."""
    main = digits_run(tmp_path / "main", "--dataloader_num_workers", "0")
    before = set(psutil.Process().children())
    workers = digits_run(tmp_path / "workers", "--dataloader_num_workers", "2", "--dataloader_persistent_workers",
                         "True", "--eval_strategy", "steps", "--eval_steps", "3")  # fmt: skip
    # the run stopped its persistent train and eval workers (they would otherwise wait for garbage collection)
    assert set(psutil.Process().children()) - before == set()
    assert main.keys() == workers.keys()
    tolerance = 1e-5 if ON_ACCELERATOR else 0.0
    for name in main:
        torch.testing.assert_close(workers[name], main[name], rtol=tolerance, atol=tolerance, msg=name)
