"""One process of a two-process run (torchrun, gloo on the CPU) that takes the lock of `argv[1]` as a run does
(`smile_hf.run.lock.run_lock`), then writes which process the lock file names to `argv[2]/rank<N>.json`; refused,
it writes the one-line error instead. For tests/test_output_lock.py (needs the repository root on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import sys

from smile_hf import SmileTrainingArguments
from smile_hf.checkpoints import OutputDirError
from smile_hf.run.lock import LOCK_NAME, run_lock
from tests.testing_utils import finish_rank


def main(output_dir: str, report_dir: str) -> None:
    args = SmileTrainingArguments(output_dir=output_dir, use_cpu=True, ddp_backend="gloo", report_to="none")
    report = {"rank": args.process_index, "pid": os.getpid()}
    try:
        with run_lock(args):
            with open(os.path.join(output_dir, LOCK_NAME), encoding="utf-8") as f:
                report["holder_pid"] = json.load(f)["pid"]
            import torch.distributed as dist

            dist.barrier()  # both processes read the lock file while it is held
    except OutputDirError as error:
        report["error"] = str(error)
    with open(os.path.join(report_dir, f"rank{args.process_index}.json"), "w", encoding="utf-8") as f:
        json.dump(report, f)
    finish_rank()


if __name__ == "__main__":
    main(*sys.argv[1:3])
