"""One SMILE run of a tiny text classifier (BERT, or the family given as the first argument) in each of the torchrun
processes, then each writes its student (with the auxiliary head), teacher and world size to
`<output_dir>/rank<N>.{safetensors,json}` for tests/test_text_methods.py to compare across ranks. Needs the
repository root on PYTHONPATH."""

from __future__ import annotations

import json
import os
import sys

import safetensors.torch

from smile_hf import SmileTrainingArguments
from smile_hf.backbones import unwrap_model
from smile_hf.run.arguments import run_processes_on_cpu_without_accelerator
from tests.testing_utils import finish_rank
from tests.text_testing import text_source_and_student, token_trainer


def main(family: str, output_dir: str) -> None:
    run_processes_on_cpu_without_accelerator()
    source, student = text_source_and_student(family)
    args = SmileTrainingArguments(
        output_dir=output_dir, report_to="none", save_strategy="no", method="smile", max_steps=4,
        per_device_train_batch_size=2, learning_rate=0.05, ema_update_every=1, ema_decay=0.5,
        final_finetune_fraction=0.0, disable_tqdm=True, seed=0, ddp_backend="gloo",
    )  # fmt: skip
    trainer = token_trainer(student, source, args, examples=16)
    trainer.train()
    rank = trainer.args.process_index
    state = {f"student.{k}": v for k, v in unwrap_model(trainer.model).state_dict().items()}
    state.update({f"teacher.{k}": v for k, v in trainer.teacher.model.state_dict().items()})
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    safetensors.torch.save_file(state, os.path.join(output_dir, f"rank{rank}.safetensors"))
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": trainer.args.world_size}, f)
    finish_rank()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
