"""examples/run_smile.py, one run as the script does it, then each process writes its student (with the auxiliary
head), its teacher and its world size to `<output_dir>/rank_states/rank<N>.{safetensors,json}`, for
tests/test_multiprocess.py to compare across ranks. Launched by torchrun with the script's arguments (needs the
repository root on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import sys

import safetensors.torch

from smile_hf import run as run_smile
from smile_hf.backbones import unwrap_model
from tests.testing_utils import finish_rank


def save_rank_state(trainer, output_dir: str) -> None:
    """Write this process's student (with its auxiliary head), teacher, method state and world size, for cross-rank
    checks."""
    rank = trainer.args.process_index
    folder = os.path.join(output_dir, "rank_states")
    os.makedirs(folder, exist_ok=True)
    state = {f"student.{k}": v for k, v in unwrap_model(trainer.model).state_dict().items()}
    if trainer.teacher is not None:
        state.update({f"teacher.{k}": v for k, v in trainer.teacher.model.state_dict().items()})
    state.update({f"method.{k}": v for k, v in trainer.regularizer.state_dict().items()})  # Mean Teacher's teacher...
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    safetensors.torch.save_file(state, os.path.join(folder, f"rank{rank}.safetensors"))
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": trainer.args.world_size}, f)


def main(argv: list[str]) -> None:
    run_smile.run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args = run_smile.parse_args(argv)
    _, trainer = run_smile.run(model_args, data_args, training_args)
    save_rank_state(trainer, training_args.output_dir)
    finish_rank()


if __name__ == "__main__":
    main(sys.argv[1:])
