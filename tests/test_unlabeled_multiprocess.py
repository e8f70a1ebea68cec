"""A real two-process run (torchrun; gloo on the CPU) of SMILE and of Mean Teacher with `--unlabeled_from_train`: the
ranks draw disjoint unlabelled images at every step (the stream sharded as a DistributedSampler shards an epoch) and
end with identical students and teachers (Mean Teacher's: its method state)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .test_multiprocess import free_port
from .testing_utils import TEST_DEVICE, requires_a_device_per_rank, script_device_args, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "tests" / "ddp_unlabeled_rank.py"
STEPS = 4

pytestmark = [requires_a_device_per_rank(2), pytest.mark.slow]  # about 80 s on 2 shared CPU cores


@pytest.mark.parametrize("method", ["smile", "mean_teacher"])
def test_two_processes_shard_the_unlabelled_stream_and_stay_in_sync(tmp_path, method):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(SCRIPT),
        "--dataset", "digits", "--train_samples_per_class", "4", "--max_eval_samples", "16", "--unlabeled_from_train",
        "True", "--method", method, "--max_steps", str(STEPS), "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8", "--ema_update_every", "1", "--save_strategy", "no", "--report_to", "none",
        "--disable_tqdm", "True", "--output_dir", str(tmp_path), *script_device_args(),
        "--ddp_backend", "nccl" if TEST_DEVICE.startswith("cuda") else "gloo",
    ]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "rank_states"
    drawn = [json.loads((folder / f"unlabeled{r}.json").read_text()) for r in (0, 1)]
    per_batch = 4 * {"smile": 1, "mean_teacher": 3}[method]  # unlabeled_batch_ratio: the method's default
    assert [d["world_size"] for d in drawn] == [2, 2] and drawn[0]["size"] == drawn[1]["size"] > 2 * per_batch * STEPS
    seen = [i for step in range(STEPS) for d in drawn for i in d["drawn"][step]]
    assert len(seen) == len(set(seen)) == 2 * per_batch * STEPS  # disjoint across ranks and steps within the first pass
    rank0, rank1 = (load_file(str(folder / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert method != "mean_teacher" or any(key.startswith("method.teacher_weights.") for key in rank0)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=f"{key} differs across ranks")
