"""The new head of a student that `SmileTrainer` loads itself (a checkpoint's name or path, or `model_init`) is drawn
after seeding with `args.seed`, as the stock `Trainer` seeds before `model_init`: the same in every process, whatever
the global generator's state before."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import set_seed

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.modeling import load_student

from .test_export import one_thread  # noqa: F401  (autouse fixture)

CHECKPOINT = str(Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist-resnet-tiny")


def head_of(trainer: SmileTrainer) -> dict[str, torch.Tensor]:
    return {k: v for k, v in trainer.model.state_dict().items() if k.startswith("classifier.")}


def new_trainer(tmp_path, seed: int, **kwargs) -> SmileTrainer:
    args = SmileTrainingArguments(output_dir=str(tmp_path), method="finetune", report_to="none", seed=seed,
                                  model_init_kwargs={"num_labels": 3})  # fmt: skip
    return SmileTrainer(args=args, **kwargs)


def test_a_student_loaded_by_the_trainer_has_the_head_of_its_seed(tmp_path):
    set_seed(7)
    expected = {k: v for k, v in load_student(CHECKPOINT, 3).state_dict().items() if k.startswith("classifier.")}
    assert expected  # (a second path: seeded by hand, then loaded)
    heads = []
    for draws in (0, 100):  # the global generator in another state each time
        torch.rand(draws)
        heads.append(head_of(new_trainer(tmp_path, 7, model=CHECKPOINT)))
    heads.append(head_of(new_trainer(tmp_path, 7, model_init=lambda: load_student(CHECKPOINT, 3))))
    for head in heads:
        assert head.keys() == expected.keys()
        assert all(torch.equal(head[k], v) for k, v in expected.items())
    other = head_of(new_trainer(tmp_path, 8, model=CHECKPOINT))
    assert not torch.equal(other["classifier.1.weight"], expected["classifier.1.weight"])  # the seed draws the head
