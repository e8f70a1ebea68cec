# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Sharded training (FSDP, DeepSpeed ZeRO-3) and `nn.DataParallel`: refused with one clear error each, never run
half-supported.

`nn.DataParallel` (what the Trainer uses when one process sees several GPUs) runs replicas of the model in threads on
slices of the batch, while the backbone adapter reads one forward pass's features in one place: refused, with the
one-process-per-GPU launch commands.

The teacher's EMA (`torch._foreach_lerp_` over matched parameters), the forward hooks of the backbone adapter and the
method state (`method_state.safetensors`) are written for unsharded parameters. Measured on the CPU machine
this was built on (torch 2.13, transformers 5.24, accelerate 1.15): raw FSDP2 (`fully_shard`) runs on CPU with gloo,
but the Trainer's `fsdp=` path does not: with `use_cpu=True` it silently trains with DDP (`is_fsdp_enabled` is False)
and FSDP v1 fails ("no available devices"); DeepSpeed is not installable beside the CPU torch. So neither sharded path
can be tested here, and both are refused. Under DeepSpeed (any stage), the Trainer resumes through
`deepspeed_load_checkpoint`, which bypasses `SmileTrainer._load_from_checkpoint` and would silently skip the SMILE
state: that resume is refused too. For large models, train with LoRA (`peft_config=`): the teacher then costs the
adapter, not a second model.
"""

from __future__ import annotations

import os

from transformers.training_args import ParallelMode

FSDP_ERROR = (
    "SmileTrainer does not support FSDP: the teacher's EMA, the backbone hooks and the SMILE checkpoint state work on "
    "unsharded parameters, and the Trainer's FSDP path could not be tested (on CPU, `fsdp=` with `use_cpu=True` "
    "silently trains with DDP). Train with DDP (`torchrun` / `accelerate launch --multi_gpu`) and, for large models, "
    "LoRA (`SmileTrainer(..., peft_config=LoraConfig(...))`), whose teacher costs only the adapter."
)
ZERO3_ERROR = (
    "SmileTrainer does not support DeepSpeed ZeRO-3: the teacher's EMA needs whole (not partitioned) parameters and "
    "DeepSpeed's checkpoint path skips the method state (teacher, auxiliary head, regulariser state), and neither could be "
    "tested. Use ZeRO stage 1 or 2 or DDP and, for large models, LoRA (`SmileTrainer(..., "
    "peft_config=LoraConfig(...))`), whose teacher costs only the adapter."
)
DEEPSPEED_RESUME_ERROR = (
    "SmileTrainer cannot resume under DeepSpeed: the Trainer restores DeepSpeed checkpoints with "
    "`deepspeed_load_checkpoint`, which skips method_state.safetensors (teacher, auxiliary head, regulariser state), so the "
    "run would continue from a wrong state. Resume this checkpoint without DeepSpeed (DDP), or start again."
)
DATA_PARALLEL_ERROR = (
    "SmileTrainer does not support nn.DataParallel, which the Trainer uses when one process sees {n_gpu} GPUs: its "
    "replicas run in threads on slices of the batch, while the backbone hooks read one forward pass's features in one "
    "place. Launch one process per GPU (`torchrun --nproc_per_node {n_gpu} ...` or `accelerate launch --multi_gpu "
    "...`), or make one GPU visible (`CUDA_VISIBLE_DEVICES=0`)."
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def uses_fsdp(args) -> bool:
    """Whether the training arguments (or `accelerate launch --use_fsdp`'s environment) ask for FSDP."""
    return bool(getattr(args, "fsdp", None)) or _env_flag("ACCELERATE_USE_FSDP")


def uses_zero3(args) -> bool:
    """Whether the training arguments (or `accelerate launch`'s environment) ask for DeepSpeed ZeRO stage 3."""
    if getattr(args, "deepspeed", None):
        config = getattr(args, "hf_deepspeed_config", None)
        if config is not None and config.is_zero3():
            return True
        plugin = getattr(args, "deepspeed_plugin", None)
        if plugin is not None and getattr(plugin, "zero_stage", None) == 3:
            return True
    return _env_flag("ACCELERATE_USE_DEEPSPEED") and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"


def check_sharding(args, trainer=None) -> None:
    """Raise `ValueError` with [`DATA_PARALLEL_ERROR`], [`FSDP_ERROR`] or [`ZERO3_ERROR`] when the arguments (or, once
    built, the trainer's accelerator: `is_fsdp_enabled`, DeepSpeed's ZeRO stage) ask for `nn.DataParallel` or a
    sharded mode."""
    n_gpu = getattr(args, "n_gpu", 0)
    if n_gpu > 1 and args.parallel_mode == ParallelMode.NOT_DISTRIBUTED:
        raise ValueError(DATA_PARALLEL_ERROR.format(n_gpu=n_gpu))
    fsdp = uses_fsdp(args) or bool(getattr(trainer, "is_fsdp_enabled", False))
    if fsdp:
        raise ValueError(FSDP_ERROR)
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
    if uses_zero3(args) or getattr(plugin, "zero_stage", None) == 3:
        raise ValueError(ZERO3_ERROR)


def check_resume(trainer, resume_from_checkpoint) -> None:
    """Raise `ValueError` with [`DEEPSPEED_RESUME_ERROR`] when asked to resume under DeepSpeed."""
    resuming = resume_from_checkpoint is not None and resume_from_checkpoint is not False
    if resuming and (getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer.args, "deepspeed", None)):
        raise ValueError(DEEPSPEED_RESUME_ERROR)
