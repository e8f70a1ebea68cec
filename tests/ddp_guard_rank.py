"""One rank of a two-process run (torchrun, gloo) in which only rank 1 sees NaN images, in its third batch. Writes
`<output_dir>/rank<N>.json` (what the guard did) and `rank<N>.safetensors` (the student's weights). Arguments:
output_dir nan_policy. Needs the repository root on PYTHONPATH."""

from __future__ import annotations

import json
import os
import sys

import safetensors.torch
import torch

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf.backbones import unwrap_model
from smile_hf.guard import NonFiniteLossError
from tests.testing_utils import finish_rank, random_image_dataset, source_and_student, training_device_args


class NanOnRankOne:
    def __init__(self, rank: int):
        self.rank, self.calls = rank, 0

    def __call__(self, examples):
        pixel_values = torch.stack([e["pixel_values"] for e in examples])
        if self.rank == 1 and self.calls == 2:
            pixel_values = torch.full_like(pixel_values, float("nan"))
        self.calls += 1
        return {"pixel_values": pixel_values, "labels": torch.stack([e["labels"] for e in examples])}


def main(output_dir: str, policy: str) -> None:
    rank = int(os.environ["RANK"])
    source, student = source_and_student("resnet")
    args = SmileTrainingArguments(
        output_dir=output_dir, report_to="none", method="smile", max_steps=6, logging_steps=2,
        per_device_train_batch_size=2, save_strategy="no", disable_tqdm=True, nan_policy=policy, optim="sgd",
        learning_rate=0.01, final_finetune_fraction=0.0, **training_device_args(),
    )  # fmt: skip
    trainer = SmileTrainer(model=student, args=args, teacher_model=source, train_dataset=random_image_dataset(32),
                           data_collator=NanOnRankOne(rank))  # fmt: skip
    report = {"rank": rank, "world_size": args.world_size}
    try:
        trainer.train()
    except NonFiniteLossError as error:
        report["error"] = str(error)
    report["global_step"] = trainer.state.global_step
    report["skipped_steps"] = trainer.guard.skipped_steps
    weights = {k: v.detach().contiguous() for k, v in unwrap_model(trainer.model).state_dict().items()}
    safetensors.torch.save_file(weights, os.path.join(output_dir, f"rank{rank}.safetensors"))
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    finish_rank()


if __name__ == "__main__":
    main(*sys.argv[1:])
