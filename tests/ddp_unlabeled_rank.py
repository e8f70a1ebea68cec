"""examples/run_smile.py with unlabelled images, one run as the script does it, then each process writes its weights
(tests/ddp_rank_states.py) and the dataset indices of the unlabelled images it drew at each step, for
tests/test_unlabeled_multiprocess.py to compare across ranks. Launched by torchrun (repository root on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import sys

from smile_hf import run as run_smile
from tests.ddp_rank_states import save_rank_state
from tests.testing_utils import finish_rank


def main(argv: list[str]) -> None:
    run_smile.run_processes_on_cpu_without_accelerator()
    model_args, data_args, training_args = run_smile.parse_args(argv)
    _, trainer = run_smile.run(model_args, data_args, training_args)
    save_rank_state(trainer, training_args.output_dir)
    stream, rank = trainer.unlabeled_stream, trainer.args.process_index
    drawn = [[i for _, i in stream.positions(draw)] for draw in range(trainer.state.global_step)]
    with open(os.path.join(training_args.output_dir, "rank_states", f"unlabeled{rank}.json"), "w") as f:
        json.dump({"drawn": drawn, "world_size": stream.world_size, "size": len(stream)}, f)
    finish_rank()


if __name__ == "__main__":
    main(sys.argv[1:])
