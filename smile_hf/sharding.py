# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Sharded training (FSDP2, DeepSpeed ZeRO-3) and `nn.DataParallel`: what runs sharded, and one clear error for
everything else, never run half-supported.

`nn.DataParallel` (what the Trainer uses when one process sees several GPUs) runs replicas of the model in threads on
slices of the batch, while the backbone adapter reads one forward pass's features in one place: refused, with the
one-process-per-GPU launch commands.

FSDP2 (`fsdp_config={"version": 2}` or `accelerate launch --use_fsdp --fsdp_version 2`) trains the methods of
[`FSDP2_METHODS`] on a full (not LoRA) student, on an accelerator: the teacher is sharded like the student and
follows it on the local shards ([`smile_hf.fsdp`]). Refused in one line each: FSDP1 ([`FSDP1_ERROR`]); FSDP on the
CPU, where Accelerate silently trains with DDP instead ([`FSDP_CPU_ERROR`]; the plain-loop helpers of
[`smile_hf.fsdp`] do run on the CPU with gloo); the other methods and LoRA ([`FSDP2_METHOD_ERROR`],
[`FSDP2_LORA_ERROR`]).

DeepSpeed ZeRO-3 is refused ([`ZERO3_ERROR`], pointing to FSDP2): its partitioned parameters would need the teacher
initialised through DeepSpeed and the EMA written under `GatheredParameters`, and DeepSpeed is not installable beside
the CPU torch this is tested with. Under DeepSpeed (any stage), the Trainer resumes through `deepspeed_load_checkpoint`,
which bypasses `SmileTrainer._load_from_checkpoint` and would silently skip the SMILE state: that resume is refused
too.
"""

from __future__ import annotations

import os

import torch
from transformers.training_args import ParallelMode

FSDP2_METHODS = ("finetune", "l2sp", "smile")
"""The methods trained under FSDP2: those whose state and sums over parameters are sharded-aware and tested sharded
against a single-process run (tests/test_fsdp.py)."""
FSDP1_ERROR = (
    "SmileTrainer supports FSDP2 only, not FSDP1 (`fsdp_config={{'version': {version}}}`): set "
    "`fsdp_config={{'version': 2}}`, or launch with `accelerate launch --use_fsdp --fsdp_version 2 ...`."
)
FSDP_CPU_ERROR = (
    "SmileTrainer's FSDP path needs an accelerator: on the CPU, Accelerate silently trains with DDP instead of "
    "sharding. Train on GPUs, or on the CPU with DDP (`torchrun`), or shard a plain loop with smile_hf.fsdp "
    "(`shard_model`, `shard_teacher`, which run on the CPU with gloo)."
)
FSDP2_METHOD_ERROR = (
    "Method '{method}' cannot be trained under FSDP2 (its state and regulariser are not sharded-aware): use one of "
    + ", ".join(FSDP2_METHODS) + ", or train it with DDP."
)
FSDP2_LORA_ERROR = (
    "SmileTrainer does not train a LoRA student (`peft_config`) under FSDP2: LoRA's teacher shares the student's "
    "frozen base, which sharding would cut apart. Train LoRA with DDP (its teacher costs only the adapter), or fully "
    "fine-tune under FSDP2."
)
ZERO3_ERROR = (
    "SmileTrainer does not support DeepSpeed ZeRO-3: the teacher's EMA needs parameters sharded alike on every rank "
    "and DeepSpeed's checkpoint path skips the method state (teacher, auxiliary head, regulariser state). To shard a "
    "model that does not fit on one device, use FSDP2 (`accelerate launch --use_fsdp --fsdp_version 2 ...`, "
    "methods " + ", ".join(FSDP2_METHODS) + "), or ZeRO stage 1 or 2, or LoRA (`peft_config=LoraConfig(...)`)."
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


def fsdp_version(args) -> int | None:
    """The FSDP version the arguments (`fsdp_config`'s `version`, default 2) or `accelerate launch`'s environment
    (`FSDP_VERSION`, which `--fsdp_version` sets; 1 by default) ask for; None without FSDP."""
    if getattr(args, "fsdp", None):
        config = getattr(args, "fsdp_config", None) or {}
        return int(config.get("version", config.get("fsdp_version", 2)))
    if _env_flag("ACCELERATE_USE_FSDP"):
        return int(os.environ.get("FSDP_VERSION", "1"))
    return None


def check_fsdp(args, peft_config=None) -> None:
    """Raise `ValueError` with [`FSDP1_ERROR`], [`FSDP2_METHOD_ERROR`], [`FSDP2_LORA_ERROR`] or [`FSDP_CPU_ERROR`]
    when FSDP is asked for in a form SmileTrainer does not train (nothing without FSDP)."""
    version = fsdp_version(args)
    if version is None:
        return
    if version != 2:
        raise ValueError(FSDP1_ERROR.format(version=version))
    method = getattr(args, "regularizer", None)
    if method is not None and method not in FSDP2_METHODS:
        raise ValueError(FSDP2_METHOD_ERROR.format(method=method))
    if peft_config is not None:
        raise ValueError(FSDP2_LORA_ERROR)
    if getattr(args, "use_cpu", False) or not torch.accelerator.is_available():
        raise ValueError(FSDP_CPU_ERROR)


def check_sharding(args, trainer=None) -> None:
    """Raise `ValueError` with [`DATA_PARALLEL_ERROR`], an FSDP refusal ([`check_fsdp`]) or [`ZERO3_ERROR`] when the
    arguments (or, once built, the trainer's accelerator: `is_fsdp_enabled`, DeepSpeed's ZeRO stage) ask for
    `nn.DataParallel` or a sharded mode SmileTrainer does not train."""
    n_gpu = getattr(args, "n_gpu", 0)
    if n_gpu > 1 and args.parallel_mode == ParallelMode.NOT_DISTRIBUTED:
        raise ValueError(DATA_PARALLEL_ERROR.format(n_gpu=n_gpu))
    check_fsdp(args, getattr(trainer, "_peft_config", None))
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "fsdp_plugin", None)
    if getattr(trainer, "is_fsdp_enabled", False) and getattr(plugin, "fsdp_version", 2) != 2:
        raise ValueError(FSDP1_ERROR.format(version=plugin.fsdp_version))
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
    if uses_zero3(args) or getattr(plugin, "zero_stage", None) == 3:
        raise ValueError(ZERO3_ERROR)


def is_fsdp2(trainer) -> bool:
    """Whether `trainer` trains under FSDP2 (Accelerate's FSDP plugin, version 2)."""
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "fsdp_plugin", None)
    return bool(getattr(trainer, "is_fsdp_enabled", False)) and getattr(plugin, "fsdp_version", None) == 2


def check_resume(trainer, resume_from_checkpoint) -> None:
    """Raise `ValueError` with [`DEEPSPEED_RESUME_ERROR`] when asked to resume under DeepSpeed."""
    resuming = resume_from_checkpoint is not None and resume_from_checkpoint is not False
    if resuming and (getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer.args, "deepspeed", None)):
        raise ValueError(DEEPSPEED_RESUME_ERROR)
