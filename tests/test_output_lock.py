"""One run per output folder: a run holds the lock of its `--output_dir` from before it writes anything to its end; a
second run (`smile-hf train`, `smile-hf compare`) is refused in one line naming the holder; a lock whose process is
gone is taken over; with several processes only the main one locks. With real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smile_hf import run as run_smile
from smile_hf.run import compare as compare_methods
from smile_hf.run.lock import LOCK_NAME, OutputDirInUseError, output_dir_lock

from .test_compare_reliability import compare_argv
from .test_multiprocess import free_port
from .test_run_reliability import tiny_argv
from .testing_utils import subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = subprocess_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
HOLD = "import sys; from smile_hf.run.lock import output_dir_lock\nwith output_dir_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True); sys.stdin.readline()"  # fmt: skip


def start_holder(folder) -> subprocess.Popen:
    """A process that holds the lock of `folder` until its standard input gets a line (or it is killed)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=ENV, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    return holder


def train_command(*argv) -> list[str]:
    return [sys.executable, "-m", "smile_hf.cli", "train", *argv]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


def test_a_held_folder_is_refused_naming_the_holder_until_the_holder_is_gone(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        result = subprocess.run(train_command(*tiny_argv(out)), env=ENV, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        assert error_lines(result.stderr) == [
            f"smile-hf train: error: --output_dir {out} is in use by another run (PID {holder.pid} on host "
            + error_lines(result.stderr)[0].split(" on host ", 1)[1]
        ]
        assert "Wait for it to end" in result.stderr and os.listdir(out) == [LOCK_NAME]  # nothing written
        with pytest.raises(OutputDirInUseError, match=f"PID {holder.pid} "):  # the comparison locks its folder too
            compare_methods.main(compare_argv(out))
    finally:
        holder.send_signal(signal.SIGKILL)  # gone without releasing: its lock file stays, stale
        holder.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    result = run_smile.main(tiny_argv(out))
    assert result["global_step"] == 3 and not (out / LOCK_NAME).exists()  # taken over, released at the end


def test_two_runs_started_together_on_one_folder(tmp_path):
    out = tmp_path / "run"
    runs = [subprocess.Popen(train_command(*tiny_argv(out, "--seed", str(seed))), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for seed in (1, 2)]  # fmt: skip
    outputs = [run.communicate(timeout=600) for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 2], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    lines = error_lines(outputs[loser][1])
    assert len(lines) == 1 and ("is in use by another run" in lines[0] or "holds a finished run" in lines[0]), lines
    assert not error_lines(outputs[winner][1])
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["seed"] == winner + 1 and not (out / LOCK_NAME).exists()


def test_a_comparison_refuses_a_folder_held_in_this_process_too(tmp_path):
    with output_dir_lock(str(tmp_path / "cmp")):
        with pytest.raises(OutputDirInUseError, match=f"PID {os.getpid()} "):
            compare_methods.main(compare_argv(tmp_path / "cmp"))
        with pytest.raises(OutputDirInUseError, match=f"PID {os.getpid()} "):
            run_smile.main(tiny_argv(tmp_path / "cmp"))


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    result = subprocess.run(train_command(*tiny_argv(tmp_path / "file")), env=ENV, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 2 and error_lines(result.stderr) == [
        f"smile-hf train: error: --output_dir {tmp_path / 'file'} is a file, not a folder: pass a folder (new or "
        "existing)."
    ], result.stderr


def torchrun_lock(output_dir, report_dir) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(REPO_ROOT / "tests" / "ddp_lock_rank.py"), str(output_dir),
               str(report_dir)]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((report_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.cpu_only("two processes with gloo lock one folder")
def test_only_the_main_process_locks_and_every_process_stops_when_refused(tmp_path):
    out, reports = tmp_path / "run", tmp_path / "reports"
    reports.mkdir()
    rank0, rank1 = torchrun_lock(out, reports)
    assert rank0["holder_pid"] == rank0["pid"] and rank1["holder_pid"] == rank0["pid"] != rank1["pid"]
    holder = start_holder(out)
    try:
        rank0, rank1 = torchrun_lock(out, reports)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait()
    assert rank0["error"] == rank1["error"] and f"PID {holder.pid} " in rank0["error"]
    assert not (out / LOCK_NAME).exists()  # released by its holder


@pytest.mark.cpu_only("two processes with gloo lock one folder")
def test_on_several_nodes_only_the_global_main_process_locks(tmp_path):
    """Two nodes of one process each, on a shared folder: both processes are local rank 0, only global rank 0 locks
    (a lock taken on every node's local rank 0 would refuse the second node's run)."""
    out, reports = tmp_path / "run", tmp_path / "reports"
    reports.mkdir()
    script, port = str(REPO_ROOT / "tests" / "ddp_lock_rank.py"), str(free_port())
    nodes = [
        subprocess.Popen([sys.executable, script, str(out), str(reports)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**ENV, "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                                         "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                                         "MASTER_PORT": port})  # fmt: skip
        for rank in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    rank0, rank1 = (json.loads((reports / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert (rank0["rank"], rank1["rank"]) == (0, 1)  # the global ranks, from RANK
    assert "error" not in rank0 and "error" not in rank1
    assert rank0["holder_pid"] == rank0["pid"] and rank1["holder_pid"] == rank0["pid"] != rank1["pid"]
    assert not (out / LOCK_NAME).exists()  # released by its holder
