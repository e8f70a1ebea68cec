"""A run of the run script (`smile-hf train` arguments in `argv[1:]`) that kills itself with SIGKILL at a named point,
for tests/test_kill_resume.py (needs the repository root on PYTHONPATH).

`SMILE_HF_KILL_AT` names the point as `<point>@<step>` (steps are 1-based optimizer steps) or `<point>` for the points
after training; unset, the run goes to its end. `SMILE_HF_METHOD_STATE_OUT`, when set, is where a finished run writes
its final method state (teacher with its EMA counter, auxiliary head, regulariser state) as safetensors.

Points ([`KILL_POINTS`]):
- `mid_step@k`: during step k, after the training forward pass of the student (BatchNorm statistics moved) and before
  the optimizer step;
- `lr_step@k`: in step k, right after the learning-rate scheduler stepped (the optimizer has stepped, the step is not
  counted yet);
- `ema@k`: right after the EMA update of the teacher at the end of step k, before the step's checkpoint;
- `mid_save@k`: while checkpoint-k is written, between the student's weights and the optimizer's state;
- `before_method_state@k`: while checkpoint-k is written, after the stock files, before `method_state.safetensors`;
- `after_marker@k`: right after checkpoint-k's completion marker, before older checkpoints are deleted;
- `final_evaluate`: at the start of the evaluation after training;
- `final_export`: during the final export, after the model's weights are written, before the rest of the folder.
"""

from __future__ import annotations

import os
import signal
import sys

import safetensors.torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer

from smile_hf import checkpoints
from smile_hf.run.arguments import parse_args, run_processes_on_cpu_without_accelerator
from smile_hf.run.driver import run
from smile_hf.teacher import EmaTeacherCallback
from smile_hf.trainer import SmileTrainer

KILL_AT_VARIABLE = "SMILE_HF_KILL_AT"
METHOD_STATE_OUT_VARIABLE = "SMILE_HF_METHOD_STATE_OUT"
KILL_POINTS = ("mid_step", "lr_step", "ema", "mid_save", "before_method_state", "after_marker", "final_evaluate",
               "final_export")  # fmt: skip


def die() -> None:
    """SIGKILL this process: no handler, no `finally`, no flush runs."""
    os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_step(path: str) -> int | None:
    name = os.path.basename(os.path.normpath(path))
    return int(name.rsplit("-", 1)[1]) if name.startswith("checkpoint-") else None


def install(point: str, step: int | None) -> None:
    """Patch the code reached at `point` (of step `step`) so that it kills the process there."""
    if point == "mid_step":
        compute_loss = SmileTrainer.compute_loss

        def killing_compute_loss(self, model, inputs, *args, **kwargs):
            loss = compute_loss(self, model, inputs, *args, **kwargs)
            if model.training and self.state.global_step == step - 1:
                die()
            return loss

        SmileTrainer.compute_loss = killing_compute_loss
    elif point == "lr_step":  # (the class's method: a scheduler's state_dict holds its instance attributes)
        scheduler_step = LambdaLR.step

        def killing_step(self, *args, **kwargs):
            scheduler_step(self, *args, **kwargs)
            if self.last_epoch == step:
                assert self.get_last_lr()[0] < self.base_lrs[0], f"the learning rate is not lowered at step {step}"
                die()

        LambdaLR.step = killing_step
    elif point == "ema":
        on_step_end = EmaTeacherCallback.on_step_end

        def killing_on_step_end(self, args, state, control, **kwargs):
            updates = int(self.teacher.num_updates)
            on_step_end(self, args, state, control, **kwargs)
            if state.global_step == step:
                assert int(self.teacher.num_updates) == updates + 1, f"no EMA update at step {step}"
                die()

        EmaTeacherCallback.on_step_end = killing_on_step_end
    elif point == "mid_save":
        save_optimizer = Trainer._save_optimizer_and_scheduler

        def killing_save_optimizer(self, output_dir):
            if checkpoint_step(output_dir) == step:
                assert os.path.isfile(os.path.join(output_dir, "model.safetensors"))
                die()
            save_optimizer(self, output_dir)

        Trainer._save_optimizer_and_scheduler = killing_save_optimizer
    elif point in ("before_method_state", "after_marker"):
        save_atomic, write_marker = checkpoints.save_safetensors_atomic, checkpoints.write_completion_marker

        def killing_save_atomic(tensors, path, metadata=None):
            if point == "before_method_state" and checkpoint_step(os.path.dirname(path)) == step:
                die()
            save_atomic(tensors, path, metadata)

        def killing_write_marker(checkpoint_dir, global_step=None, **extra):
            path = write_marker(checkpoint_dir, global_step, **extra)
            if point == "after_marker" and global_step == step:
                die()
            return path

        checkpoints.save_safetensors_atomic = killing_save_atomic
        checkpoints.write_completion_marker = killing_write_marker
    elif point == "final_evaluate":
        evaluate = SmileTrainer.evaluate

        def killing_evaluate(self, *args, **kwargs):
            if self.state.global_step >= self.state.max_steps > 0:
                die()
            return evaluate(self, *args, **kwargs)

        SmileTrainer.evaluate = killing_evaluate
    elif point == "final_export":
        save_model = SmileTrainer.save_model

        def killing_save_model(self, output_dir=None, _internal_call=False):
            save_model(self, output_dir, _internal_call)
            if not _internal_call:
                die()

        SmileTrainer.save_model = killing_save_model
    else:
        raise ValueError(f"Unknown kill point '{point}': one of {', '.join(KILL_POINTS)}.")


def main(argv: list[str]) -> None:
    kill_at = os.environ.get(KILL_AT_VARIABLE)
    if kill_at:
        point, _, step = kill_at.partition("@")
        install(point, int(step) if step else None)
    run_processes_on_cpu_without_accelerator()
    _, trainer = run(*parse_args(argv))
    out = os.environ.get(METHOD_STATE_OUT_VARIABLE)
    if out:
        safetensors.torch.save_file(trainer.method_state_dict(), out)


if __name__ == "__main__":
    main(sys.argv[1:])
