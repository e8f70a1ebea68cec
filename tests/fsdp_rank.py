"""One rank of tests/test_fsdp.py's two-process FSDP2 runs (torchrun, gloo on the CPU), and the plain training loop
both the sharded runs and the test's single-process reference run.

A tiny ViT (LayerNorm, no BatchNorm, no dropout: each image's forward pass is independent of the others in its batch)
is trained with `TransferLoss` in a plain loop, SGD with momentum, for SMILE (EMA teacher, auxiliary head, mixup)
and L2-SP (starting point, taken before sharding as SmileTrainer does and cut into shards at the first step; head
penalty). Each step's batch of `BATCH` images is split in two halves: rank r trains on
half r with the mix drawn for rank r; the single-process reference runs both halves as two micro-batches, each loss
weighted 1/2, then one optimizer step (what FSDP2's averaging of the two ranks' gradients computes).

`python tests/fsdp_rank.py OUT train`: for each method, 4 steps (the weights, losses and teacher memory written for
the test), then a second run of 2 steps that saves a sharded checkpoint and ends without any clean-up (as if killed).
`python tests/fsdp_rank.py OUT resume`: for each method, a fresh run loads that checkpoint and trains steps 3 and 4.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import safetensors.torch
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from smile_hf import EmaTeacher, TransferLoss
from smile_hf.backbones import BackboneAdapter, build_source_head_copy
from smile_hf.checkpoints import COMPLETE_MARKER_NAME
from smile_hf.fsdp import ShardedMethodStateMixin
from smile_hf.method_state import MethodStateMixin
from smile_hf.methods import REGULARIZERS, RegularizerContext, parse_method
from smile_hf.modeling import attach_source_head
from tests.testing_utils import IMAGE_SIZE, finish_rank, source_and_student

METHODS = {"smile": ("smile", {"ema_decay": 0.5, "ema_update_every": 1}), "l2sp": ("l2sp+mixup", {"l2sp_alpha": 0.5})}
STEPS, STOP, BATCH, SEED, LR = 4, 2, 8, 3, 0.05


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(SEED)
    return [(torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g), torch.randint(0, 3, (BATCH,), generator=g))
            for _ in range(STEPS)]  # fmt: skip


def halves(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = batches()[step]
    half = BATCH // 2
    return [(x[:half], y[:half]), (x[half:], y[half:])]


class Run:
    """Student, teacher, loss and optimizer of one method, unsharded or sharded with smile_hf.fsdp."""

    def __init__(self, method: str, sharded: bool):
        from smile_hf.fsdp import shard_model, shard_teacher

        spec, hyperparameters = METHODS[method]
        source, student = source_and_student("vit", device="cpu")
        adapter = BackboneAdapter(student)
        regulariser, mixing = parse_method(spec)
        self.method = REGULARIZERS[regulariser](**hyperparameters)
        if self.method.needs_source_head:
            attach_source_head(student, build_source_head_copy(adapter, source))
        teacher = None
        context = RegularizerContext(student, adapter, batches=lambda: [], device="cpu")
        if self.method.name == "l2sp":  # as SmileTrainer does: the starting point taken before the model is sharded
            self.method.setup(context)
        if sharded:
            shard_model(student, adapter)
            if self.method.needs_teacher:  # `source` is loaded apart from the student, never copied from it
                teacher = shard_teacher(student, adapter, source, decay=self.method.ema_decay, update_every=1)
        elif self.method.needs_teacher:
            teacher = EmaTeacher(source, adapter, self.method.ema_decay, 1)
        self.model, self.teacher = student.train(), teacher
        self.loss_fn = TransferLoss(self.method, adapter, teacher, mixing=mixing, seed=SEED)
        self.method.setup(context)  # (L2-SP: already taken, kept)
        self.optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9)

    def micro_batch(self, step: int, rank: int, weight: float) -> dict[str, float]:
        x, y = halves(step)[rank]
        self.loss_fn.rank = rank
        output = self.loss_fn(self.model, x, y, self.loss_fn.draw_mix(x, self.model, step))
        (weight * output.loss).backward()
        return {"loss": output.loss.detach().item(), **{k: float(v.detach()) for k, (_, v) in output.terms.items()}}

    def end_step(self, step: int) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.teacher is not None and self.teacher.should_update(step + 1):
            self.teacher.update(self.model)

    def full_state(self) -> dict[str, torch.Tensor]:
        """Student, teacher and regulariser state, whole (gathered from the shards: every rank calls it)."""
        options = StateDictOptions(full_state_dict=True)
        state = {f"student.{k}": v for k, v in get_model_state_dict(self.model, options=options).items()}
        if self.teacher is not None:
            state.update({f"teacher.{k}": _full(v) for k, v in self.teacher.state_dict().items()})
        state.update({f"method.{k}": _full(v) for k, v in self.method.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}


class _TrainerBase:
    """What `ShardedMethodStateMixin` and `MethodStateMixin` reach through `super()` in a Trainer (nothing here)."""

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        pass

    def checkpoint_marker_fields(self) -> dict[str, str]:
        return {}


class ShardedTrainer(ShardedMethodStateMixin, MethodStateMixin, _TrainerBase):
    """SmileTrainer's method-state checkpointing (the real mixins) on a run's sharded student, teacher and method,
    as under Accelerate's FSDP2 plugin (`is_fsdp2`: `is_fsdp_enabled` and the plugin's `fsdp_version` 2)."""

    is_fsdp_enabled = True

    def __init__(self, run: Run):
        self.model, self.teacher, self.regularizer = run.model, run.teacher, run.method
        self.accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=2)))
        self.args = SimpleNamespace(method=run.method.name, regularizer=run.method.name)

    def full_method_state(self) -> dict[str, torch.Tensor]:
        return {k: _full(v).detach().clone() for k, v in self._method_state_tensors().items()}


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, torch.distributed.tensor.DTensor) else tensor


def train(run: Run, steps: range, rank: int) -> list[dict[str, float]]:
    """The sharded loop of one rank: its half of each batch, FSDP2 averaging the two ranks' gradients."""
    losses = []
    for step in steps:
        losses.append(run.micro_batch(step, rank, 1.0))
        run.end_step(step)
    return losses


def write(out: str, name: str, run: Run, rank: int, report: dict) -> None:
    state = run.full_state()
    if rank == 0:
        safetensors.torch.save_file(state, os.path.join(out, f"{name}.safetensors"))
    with open(os.path.join(out, f"{name}.rank{rank}.json"), "w") as f:
        json.dump(report, f)


def save_trainer_method_state(trainer: ShardedTrainer, folder: str, rank: int) -> None:
    """What SmileTrainer's checkpoint save adds under FSDP2: the sharded method state (every rank), and the marker's
    fields (`checkpoint_complete.json`, written by rank 0 here as `CompleteCheckpointMixin` does)."""
    os.makedirs(folder, exist_ok=True)
    assert trainer.extra_checkpoint_files() == {}  # no method_state.safetensors
    trainer._save_optimizer_and_scheduler(folder)
    dist.barrier()
    if rank == 0:
        with open(os.path.join(folder, COMPLETE_MARKER_NAME), "w") as f:
            json.dump({"global_step": STOP, **trainer.checkpoint_marker_fields()}, f)
    dist.barrier()


def trainer_method_state_equal(resumed: Run, folder: str) -> bool:
    """A fresh run's method state restored by SmileTrainer's FSDP2 loading equals the one `load_sharded_checkpoint`
    restored into `resumed` (both written at the same step)."""
    fresh = ShardedTrainer(Run(resumed.method.name, sharded=True))
    fresh._load_method_state(folder)
    want, got = ShardedTrainer(resumed).full_method_state(), fresh.full_method_state()
    return want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)


def main(out: str, phase: str) -> None:
    from smile_hf.fsdp import load_sharded_checkpoint, save_sharded_checkpoint
    from smile_hf.shards import local_bytes

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    for method in METHODS:
        folder = os.path.join(out, f"checkpoint-{method}")
        if phase == "train":
            run = Run(method, sharded=True)
            losses = train(run, range(STEPS), rank)
            report = {"losses": losses, "teacher_local_bytes": local_bytes(run.teacher.model) if run.teacher else 0}
            if run.teacher is not None:  # an EMA towards a student not sharded like the teacher is refused
                try:
                    run.teacher.update(source_and_student("vit", device="cpu")[1])
                except ValueError as error:
                    report["unsharded_student_error"] = str(error)
            write(out, f"{method}_full", run, rank, report)
            stopped = Run(method, sharded=True)
            train(stopped, range(STOP), rank)
            os.makedirs(folder, exist_ok=True)
            save_sharded_checkpoint(folder, stopped.model, stopped.optimizer, stopped.teacher, stopped.method, STOP)
            save_trainer_method_state(ShardedTrainer(stopped), f"{folder}-trainer", rank)
        else:
            run = Run(method, sharded=True)
            step = load_sharded_checkpoint(folder, run.model, run.optimizer, run.teacher, run.method)
            trainer_state_equal = trainer_method_state_equal(run, f"{folder}-trainer")
            losses = train(run, range(step, STEPS), rank)
            report = {"losses": losses, "step": step, "trainer_method_state_equal": trainer_state_equal}
            write(out, f"{method}_resumed", run, rank, report)
    if phase == "train":  # killed: no clean-up, no process-group shutdown
        sys.stdout.flush()
        os._exit(0)
    finish_rank()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
