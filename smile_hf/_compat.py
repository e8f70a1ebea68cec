# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Every access that depends on an upstream version or on an upstream private API, each behind one function.

smile_hf supports transformers >= 5.23, peft >= 0.21 and torch >= 2.13 (setup.py). What it needs from them beyond
their public API is listed here, and `tests/test_compat.py` checks each item against the installed versions, so that
an upstream change fails one named test instead of a training run:

- `transformers.Trainer` members that [`SmileTrainer`] overrides ([`TRAINER_OVERRIDES`]), calls
  ([`trainer_run_dir`], [`push_checkpoint`], [`mark_scheduler_created`]) or sets ([`declare_unscaled_loss`]);
- `PreTrainedModel._keys_to_ignore_on_save` ([`hide_from_save`]);
- peft's adapter layers ([`peft_tuner_layers`]) and the switching of their adapters ([`switch_adapters`]), which
  uses peft's public `set_adapter` / `enable_adapters` of each layer;
- the DataLoaders a `Trainer` keeps (accelerate's `Accelerator._dataloaders`, `Trainer._eval_dataloaders`) and
  torch's DataLoader iterator ([`shut_down_dataloader_workers`]);
- `torch.accelerator` ([`accelerator_available`]); torch's dispatch modes ([`TorchDispatchMode`],
  [`operator_name`]) and the module under `torch.compile` ([`compiled_inner`]).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: F401  (re-exported: torch has no public path)

if TYPE_CHECKING:
    from transformers import Trainer

TRAINER_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_save_checkpoint": ("self", "model", "trial"),
    "_load_from_checkpoint": ("self", "resume_from_checkpoint", "model"),
    "_init_training_state": (
        "self", "max_steps", "num_update_steps_per_epoch", "num_train_epochs", "resume_from_checkpoint", "trial"
    ),
}
"""Private `Trainer` methods that `SmileTrainer` overrides (and calls through `super()`), with the parameters their
overrides expect: the complete-checkpoint save and the resume from the last step ([`CompleteCheckpointMixin`]), and the
SMILE-state resume."""

TRAINER_CALLS: dict[str, tuple[str, ...]] = {
    "_get_output_dir": ("self", "trial"),
    "_push_from_checkpoint": ("self", "checkpoint_folder"),
}
"""Private `Trainer` methods that smile_hf calls, with their parameters."""

LOSS_SCALING_FLAG = "loss_is_scaled_for_ga"
"""The `Trainer` attribute saying whether `compute_loss` returns a loss already scaled for gradient accumulation
(transformers >= 5.23): False makes `training_step` divide it by the number of accumulation steps."""

SCHEDULER_CREATED_FLAG = "_created_lr_scheduler"
"""The `Trainer` attribute that makes `train()` rebuild a scheduler created by `create_scheduler` (set to True there)."""


def trainer_member_problems() -> list[str]:
    """One line per private `Trainer` member smile_hf relies on that the installed transformers lacks or has changed
    (empty when all are as expected)."""
    from transformers import Trainer

    problems = []
    for name, expected in {**TRAINER_OVERRIDES, **TRAINER_CALLS}.items():
        member = getattr(Trainer, name, None)
        if not callable(member):
            problems.append(f"transformers.Trainer.{name} is gone")
            continue
        found = tuple(inspect.signature(member).parameters)
        if found != expected:
            problems.append(f"transformers.Trainer.{name} takes {found}, smile_hf expects {expected}")
    if not hasattr(Trainer, LOSS_SCALING_FLAG):
        problems.append(f"transformers.Trainer.{LOSS_SCALING_FLAG} is gone")
    return problems


def trainer_run_dir(trainer: Trainer, trial=None) -> str:
    """The folder the Trainer writes the checkpoints of `trial` into (`output_dir`, or a hyperparameter-search
    trial's folder under it): `Trainer._get_output_dir`."""
    return trainer._get_output_dir(trial=trial)


def push_checkpoint(trainer: Trainer, checkpoint_dir: str) -> None:
    """Push a saved checkpoint to the Hub as the Trainer does after each save (`hub_strategy`):
    `Trainer._push_from_checkpoint`."""
    trainer._push_from_checkpoint(checkpoint_dir)


def declare_unscaled_loss(trainer: Trainer) -> None:
    """Tell the Trainer that `compute_loss` returns a per-batch mean, not normalised over the accumulated batch, so
    that `training_step` divides it by the number of gradient accumulation steps: `trainer.loss_is_scaled_for_ga =
    False`, the attribute transformers documents for trainers that compute their own loss.

    Where the installed transformers lacks that attribute, its rule is "divide unless the model accepts loss kwargs or
    a `compute_loss_func` is set"; the division then still happens without a `compute_loss_func` (refused there in
    one line). `model_accepts_loss_kwargs` is set False in both cases: SmileTrainer never passes `num_items_in_batch`
    to the model, so the Trainer need not count the items of each batch for it."""
    trainer.model_accepts_loss_kwargs = False
    if hasattr(type(trainer), LOSS_SCALING_FLAG):
        setattr(trainer, LOSS_SCALING_FLAG, False)
    elif trainer.compute_loss_func is not None:
        raise ValueError(
            f"This transformers has no `Trainer.{LOSS_SCALING_FLAG}`, without which a `compute_loss_func` would not be "
            "divided by the gradient accumulation steps: install transformers>=5.23."
        )


def mark_scheduler_created(trainer: Trainer) -> None:
    """Tell the Trainer that `create_scheduler` built `trainer.lr_scheduler`, so that a later `train()` call builds a
    new one for its own number of steps instead of reusing it (as the stock `create_scheduler` does)."""
    setattr(trainer, SCHEDULER_CREATED_FLAG, True)


def rotate_checkpoints(trainer: Trainer, run_dir: str) -> None:
    """Delete the checkpoints of `run_dir` beyond `trainer.args.save_total_limit`, oldest first (by modification
    time), always keeping the newest and the best one."""
    from transformers.trainer_utils import rotate_checkpoints as _rotate_checkpoints

    _rotate_checkpoints(
        output_dir=run_dir,
        save_total_limit=trainer.args.save_total_limit,
        best_model_checkpoint=trainer.state.best_model_checkpoint,
        use_mtime=True,
    )


def hide_from_save(model: nn.Module, keys: set[str]) -> None:
    """Leave the state-dict `keys` of `model` out of every `save_pretrained` (`PreTrainedModel._keys_to_ignore_on_save`,
    which `save_pretrained` reads from the instance)."""
    model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | set(keys)


def portable_image_processor_class():
    """transformers' generic PIL image processor, `PilBackend` (resize, center crop, rescale, normalise, as its
    attributes say). `AutoImageProcessor` loads a saved `image_processor_type` by backend: a model's processor
    (`DeiTImageProcessor`...) as its torchvision class wherever torchvision is installed, whose uint8 resize differs
    from PIL's by one level on some pixels. `"PilBackend"` is in no backend mapping, so it loads as itself, torchvision
    or not (without torchvision, transformers first looks for a `PilBackendPil` and logs once "Requested pil backend
    is not available. Falling back to torchvision backend." before loading `PilBackend` itself)."""
    import transformers

    return transformers.PilBackend


def shut_down_dataloader_workers(trainer: Trainer) -> int:
    """Stop the worker processes of the DataLoaders `trainer` keeps: those accelerate prepared
    (`Accelerator._dataloaders`) and the evaluation ones the Trainer caches with persistent workers
    (`Trainer._eval_dataloaders`). Persistent workers otherwise live until their DataLoader is garbage-collected,
    which a finished trainer's reference cycles delay, so runs made one after another in a process (a comparison, a
    search's trials) would pile them up. A later iteration of a DataLoader starts new workers. Returns how many
    DataLoaders had workers to stop."""
    loaders = [*getattr(trainer.accelerator, "_dataloaders", []), *getattr(trainer, "_eval_dataloaders", {}).values()]
    stopped = 0
    for loader in {id(loader): loader for loader in loaders}.values():
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()  # what the iterator's __del__ does
            loader._iterator = None  # DataLoader.__iter__ then builds a new one
            stopped += 1
    return stopped


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU...): `torch.accelerator.is_available()`."""
    return torch.accelerator.is_available()


def operator_name(func) -> str:
    """The name of an operator a `TorchDispatchMode` sees, e.g. `"aten::add"` (the overload is not part of it)."""
    return func._schema.name


def compiled_inner(model: nn.Module) -> nn.Module | None:
    """The module that `torch.compile` wrapped (`OptimizedModule._orig_mod`), or None when `model` is not such a
    wrapper."""
    return getattr(model, "_orig_mod", None)


# ---- peft ------------------------------------------------------------------------------------------------------------


def peft_tuner_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The peft adapter layers (LoRA...) of `model`, not the `modules_to_save` wrappers of its heads (which are
    `BaseTunerLayer`s too, as `AuxiliaryTrainingWrapper`s)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and not isinstance(module, AuxiliaryTrainingWrapper):
            yield module


@contextlib.contextmanager
def switch_adapters(layers: list[nn.Module], adapter_name: str | None):
    """Within the context, every layer of `layers` (from [`peft_tuner_layers`]) runs adapter `adapter_name`, or no
    adapter when it is None (the base model). On exit each layer's active adapters, its enabled flag and the
    `requires_grad` flags of its parameters are as they were (peft's `set_adapter` / `enable_adapters` change them)."""
    saved = [(layer, list(layer.active_adapters), layer.disable_adapters) for layer in layers]
    flags = [(p, p.requires_grad) for layer in layers for p in layer.parameters()]
    try:
        for layer in layers:
            if adapter_name is None:
                layer.enable_adapters(False)
            else:
                layer.set_adapter(adapter_name, inference_mode=True)
        yield
    finally:
        for layer, active, disabled in saved:
            layer.set_adapter(active)
            layer.enable_adapters(not disabled)
        for p, flag in flags:
            p.requires_grad_(flag)
