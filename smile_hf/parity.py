# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""What every `transformers.TrainingArguments` field and every `Trainer.__init__` argument means under
[`SmileTrainer`]: it works (and a test says so), it is irrelevant to image classification (and why), or it is
refused with a one-line error naming what to do instead. Never silently ignored.

`tests/test_parity.py` walks the fields and the signature of the installed transformers and fails on a name that is
not classified here, so that a new field of a new release cannot be ignored without anyone deciding. A "works" entry
names the test file that exercises it.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

from torch import nn
from transformers import TrainingArguments

from .sharding import FSDP2_METHODS

WORKS, IRRELEVANT, REFUSED = "works", "irrelevant", "refused"

_STOCK_RUN = "tests/test_parity_stock.py"  # the same weights, logs and evaluations as the stock Trainer
_CHECKPOINTS = "tests/test_checkpoints.py"
_HUB = "tests/test_hub.py"
_SHARDING = "tests/test_lora.py"  # the DeepSpeed refusals are tested beside the LoRA path they point to
_FSDP = "tests/test_fsdp.py"
_DEVICES = "tests/test_device_selection.py"
_RUN = "tests/test_run_smile.py"
_ACTIVATION_CHECKPOINTING = "tests/test_activation_checkpointing.py"  # refusals: smile_hf.activation_checkpointing

TRAINING_ARGUMENTS: dict[str, tuple[str, str]] = {
    # ---- optimisation
    "output_dir": (WORKS, _CHECKPOINTS),
    "per_device_train_batch_size": (WORKS, _STOCK_RUN),
    "num_train_epochs": (WORKS, _STOCK_RUN),
    "max_steps": (WORKS, "tests/test_trainer.py"),
    "learning_rate": (WORKS, _STOCK_RUN),
    "lr_scheduler_type": (WORKS, _STOCK_RUN),
    "lr_scheduler_kwargs": (WORKS, _STOCK_RUN),
    "warmup_steps": (WORKS, "tests/test_parity_schedule.py"),
    "warmup_ratio": (WORKS, "tests/test_parity_schedule.py"),  # a field of older releases (warmup_steps < 1 now)
    "optim": (WORKS, _STOCK_RUN),
    "optim_args": (WORKS, "tests/test_config.py"),
    "weight_decay": (WORKS, _STOCK_RUN),
    "adam_beta1": (WORKS, _STOCK_RUN),
    "adam_beta2": (WORKS, _STOCK_RUN),
    "adam_epsilon": (WORKS, _STOCK_RUN),
    "optim_target_modules": (IRRELEVANT, "selects the linear layers of language models for GaLore / APOLLO optimizers"),
    "gradient_accumulation_steps": (WORKS, "tests/test_trainer.py"),
    "average_tokens_across_devices": (
        IRRELEVANT, "counts tokens for a loss summed over tokens; SmileTrainer's loss is a per-image batch mean",
    ),
    "max_grad_norm": (WORKS, _STOCK_RUN),
    "label_smoothing_factor": (WORKS, "tests/test_parity_loss.py"),
    # ---- precision, memory, compilation
    "bf16": (WORKS, "tests/test_backbone_families.py"),
    "fp16": (WORKS, _STOCK_RUN),  # on an accelerator; refused on the CPU (check_precision: tests/test_precision.py)
    "bf16_full_eval": (WORKS, _STOCK_RUN),
    "fp16_full_eval": (WORKS, _STOCK_RUN),
    "tf32": (WORKS, "tests/conftest.py"),
    "activation_checkpointing": (
        WORKS, _ACTIVATION_CHECKPOINTING + " (refused in one line: manifold mixup, and models whose class does not "
        "support it; smile_hf.activation_checkpointing)",
    ),
    "activation_checkpointing_kwargs": (
        WORKS, _ACTIVATION_CHECKPOINTING + " (every_n_layers; refused in one line: use_reentrant=True with LoRA or "
        "DELTA's inner feature maps, offload on the CPU)",
    ),
    "gradient_checkpointing": (WORKS, _ACTIVATION_CHECKPOINTING + " (the former name of activation_checkpointing)"),
    "gradient_checkpointing_kwargs": (
        WORKS, _ACTIVATION_CHECKPOINTING + " (the former name of activation_checkpointing_kwargs)",
    ),
    "torch_compile": (WORKS, "tests/test_compile.py"),
    "torch_compile_backend": (WORKS, "tests/test_compile.py"),
    "torch_compile_mode": (WORKS, "tests/test_parity_passthrough.py"),
    "use_liger_kernel": (REFUSED, "Liger kernels replace layers of language models, which image classifiers lack: "
                         "leave use_liger_kernel=False"),
    "liger_kernel_config": (IRRELEVANT, "read only with use_liger_kernel, which is refused"),
    "use_cache": (IRRELEVANT, "the key/value cache of text generation; image classifiers have none"),
    "neftune_noise_alpha": (REFUSED, "NEFTune adds noise to token embeddings, which image classifiers lack: leave it "
                            "unset (mixup / CutMix are the image counterparts: method='mixup')"),
    "torch_empty_cache_steps": (WORKS, _STOCK_RUN),
    "auto_find_batch_size": (
        REFUSED, "retries training from step 0 with a smaller batch after an out-of-memory error, keeping the "
        "teacher and method state of the failed attempt: set per_device_train_batch_size yourself",
    ),
    # ---- logging
    "logging_strategy": (WORKS, _STOCK_RUN),
    "logging_steps": (WORKS, _STOCK_RUN),
    "logging_first_step": (WORKS, _STOCK_RUN),
    "log_on_each_node": (WORKS, _STOCK_RUN),
    "logging_nan_inf_filter": (WORKS, "tests/test_step_sync.py"),
    "include_num_input_tokens_seen": (IRRELEVANT, "counts the tokens of text inputs; images have none"),
    "log_level": (WORKS, _STOCK_RUN),
    "log_level_replica": (WORKS, _STOCK_RUN),
    "disable_tqdm": (WORKS, _STOCK_RUN),
    "report_to": (WORKS, _STOCK_RUN),
    "run_name": (WORKS, _STOCK_RUN),
    "project": (IRRELEVANT, "read only by the trackio logger (report_to='trackio'), as with the stock Trainer"),
    "trackio_space_id": (IRRELEVANT, "read only by the trackio logger (report_to='trackio'), as with the stock Trainer"),
    "trackio_bucket_id": (IRRELEVANT, "read only by the trackio logger (report_to='trackio'), as with the stock Trainer"),
    "trackio_static_space_id": (
        IRRELEVANT, "read only by the trackio logger (report_to='trackio'), as with the stock Trainer",
    ),
    # ---- evaluation
    "eval_strategy": (WORKS, _STOCK_RUN),
    "eval_steps": (WORKS, _STOCK_RUN),
    "eval_delay": (WORKS, _STOCK_RUN),
    "per_device_eval_batch_size": (WORKS, _STOCK_RUN),
    "prediction_loss_only": (WORKS, _STOCK_RUN),
    "eval_on_start": (WORKS, _STOCK_RUN),
    "eval_do_concat_batches": (WORKS, _STOCK_RUN),
    "eval_use_gather_object": (WORKS, _STOCK_RUN),
    "eval_accumulation_steps": (WORKS, _STOCK_RUN),
    "include_for_metrics": (WORKS, _STOCK_RUN),
    "batch_eval_metrics": (WORKS, _STOCK_RUN),
    # ---- saving, Hub, best model
    "save_only_model": (WORKS, _STOCK_RUN),
    "save_strategy": (WORKS, _CHECKPOINTS),
    "save_steps": (WORKS, _CHECKPOINTS),
    "save_on_each_node": (WORKS, _STOCK_RUN),
    "save_total_limit": (WORKS, _CHECKPOINTS),
    "enable_jit_checkpoint": (WORKS, "tests/test_parity_passthrough.py"),
    "push_to_hub": (WORKS, _HUB),
    "hub_token": (WORKS, "tests/test_parity_passthrough.py"),
    "hub_private_repo": (WORKS, "tests/test_parity_passthrough.py"),
    "hub_model_id": (WORKS, _HUB),
    "hub_strategy": (WORKS, _HUB),
    "hub_always_push": (WORKS, "tests/test_parity_passthrough.py"),
    "hub_revision": (WORKS, "tests/test_parity_passthrough.py"),
    "load_best_model_at_end": (WORKS, "tests/test_parity_model_init.py"),
    "metric_for_best_model": (WORKS, "tests/test_parity_model_init.py"),
    "greater_is_better": (WORKS, "tests/test_parity_model_init.py"),
    "ignore_data_skip": (WORKS, "tests/test_parity_passthrough.py"),
    "restore_callback_states_from_checkpoint": (WORKS, _STOCK_RUN),
    "resume_from_checkpoint": (IRRELEVANT, "read by run scripts, not by the Trainer; train(resume_from_checkpoint=) "
                               "is tested in tests/test_checkpoints.py"),
    # ---- reproducibility, devices, data loading
    "full_determinism": (WORKS, _STOCK_RUN),
    "seed": (WORKS, _STOCK_RUN),
    "data_seed": (WORKS, _STOCK_RUN),
    "use_cpu": (WORKS, _DEVICES),
    "accelerator_config": (WORKS, "tests/test_parity_schedule.py"),
    "parallelism_config": (
        REFUSED, "tensor, context or sequence parallelism shards the model, which the teacher's EMA and the "
        "backbone hooks cannot follow: train with DDP (torchrun) and, for large models, LoRA (peft_config)",
    ),
    "dataloader_drop_last": (WORKS, _STOCK_RUN),
    "dataloader_num_workers": (WORKS, _RUN),
    "dataloader_pin_memory": (WORKS, _RUN),
    "dataloader_persistent_workers": (WORKS, _RUN),
    "dataloader_prefetch_factor": (WORKS, _STOCK_RUN),
    "dataloader_multiprocessing_context": (WORKS, _STOCK_RUN),
    "dataloader_in_order": (WORKS, _STOCK_RUN),
    "remove_unused_columns": (WORKS, "tests/test_config.py"),
    "label_names": (WORKS, "tests/test_config.py"),
    "train_sampling_strategy": (WORKS, _STOCK_RUN),
    "length_column_name": (IRRELEVANT, "read only by train_sampling_strategy='group_by_length', for text lengths"),
    # ---- distributed
    "ddp_find_unused_parameters": (WORKS, _CHECKPOINTS),
    "ddp_bucket_cap_mb": (WORKS, _STOCK_RUN + " (one process: the stock DDP set-up, untouched; DDP runs in tests/test_multiprocess.py)"),
    "ddp_broadcast_buffers": (WORKS, _STOCK_RUN + " (one process: the stock DDP set-up, untouched; DDP runs in tests/test_multiprocess.py)"),
    "ddp_static_graph": (WORKS, _STOCK_RUN + " (one process: the stock DDP set-up, untouched; DDP runs in tests/test_multiprocess.py)"),
    "ddp_backend": (WORKS, "tests/test_multiprocess.py"),
    "ddp_timeout": (WORKS, _STOCK_RUN + " (one process: the stock DDP set-up, untouched; DDP runs in tests/test_multiprocess.py)"),
    "fsdp": (WORKS, _FSDP + " (FSDP2 on accelerators for " + ", ".join(FSDP2_METHODS) + "; FSDP1, the CPU, LoRA "
             "and the other methods refused by smile_hf.sharding.check_fsdp; the Trainer path runs in "
             "scripts/gpu_checks.sh)"),
    "fsdp_config": (WORKS, _FSDP + " (version 2 only: version 1 refused by smile_hf.sharding.check_fsdp)"),
    "deepspeed": (WORKS, _SHARDING + " (ZeRO-3 refused by smile_hf.sharding.check_sharding, pointing to FSDP2)"),
    "local_rank": (IRRELEVANT, "set by the launcher (LOCAL_RANK), not by users; two-process runs are tested in "
                   "tests/test_multiprocess.py"),
    # ---- diagnostics and script flags
    "debug": (WORKS, _STOCK_RUN),
    "skip_memory_metrics": (WORKS, _STOCK_RUN),
    "do_train": (IRRELEVANT, "read by run scripts, not by the Trainer (examples/run_smile.py reads it)"),
    "do_eval": (IRRELEVANT, "read by run scripts, not by the Trainer (examples/run_smile.py reads it)"),
    "do_predict": (IRRELEVANT, "read by run scripts, not by the Trainer (examples/run_smile.py reads it)"),
}  # fmt: skip
"""Every `TrainingArguments` field: name -> (status, the test file that exercises it, or the reason / the error)."""

TRAINER_ARGUMENTS: dict[str, tuple[str, str]] = {
    "model": (WORKS, "tests/test_trainer.py"),
    "args": (WORKS, "tests/test_trainer_contract.py (a plain TrainingArguments is converted, every value kept)"),
    "data_collator": (WORKS, "tests/test_guard.py"),
    "train_dataset": (WORKS, "tests/test_trainer.py"),
    "eval_dataset": (WORKS, "tests/test_trainer.py"),
    "processing_class": (WORKS, "tests/test_loading.py"),
    "model_init": (WORKS, "tests/test_parity_model_init.py"),
    "compute_loss_func": (WORKS, "tests/test_parity_loss.py"),
    "compute_metrics": (WORKS, "tests/test_trainer.py"),
    "callbacks": (WORKS, _STOCK_RUN),
    "optimizers": (WORKS, "tests/test_parity_model_init.py"),
    "optimizer_cls_and_kwargs": (WORKS, "tests/test_parity_model_init.py"),
    "preprocess_logits_for_metrics": (WORKS, _STOCK_RUN),
}
"""Every `Trainer.__init__` argument: name -> (status, test file or reason)."""

_STOCK_DEFAULTS = {f.name: f.default for f in fields(TrainingArguments)}


def check_refused_fields(args: TrainingArguments) -> None:
    """Raise `ValueError` with the one-line reason of the first `REFUSED` field set to anything but its stock
    default."""
    for name, (status, reason) in TRAINING_ARGUMENTS.items():
        if status != REFUSED or name not in _STOCK_DEFAULTS:
            continue
        value = getattr(args, name, None)
        if value not in (_STOCK_DEFAULTS[name], None, False, "", [], {}):
            raise ValueError(f"SmileTrainer does not support `{name}={value!r}`: {reason}.")


def check_precision(args: TrainingArguments) -> None:
    """Raise `ValueError` for a mixed precision that cannot take effect on the training device: `fp16` on the CPU,
    where accelerate never enables fp16 autocast (the run would train in float32 while its card said fp16). bf16
    autocast runs on the CPU, and transformers refuses bf16 on a GPU without it."""
    if args.fp16 and args.device.type == "cpu":
        raise ValueError(
            "`fp16=True` cannot take effect on the CPU (accelerate runs fp16 mixed precision on an accelerator only, "
            "so the run would train in float32): drop --fp16, or use --bf16 True (bf16 autocast runs on the CPU)."
        )


def check_trainer_arguments(model, args, kwargs: dict[str, Any]) -> None:
    """The one-line errors of `SmileTrainer(...)`'s arguments, raised before anything is built."""
    from .target import TargetLoss

    model_init = kwargs.get("model_init")
    if (model is None) == (model_init is None):
        raise ValueError("SmileTrainer needs exactly one of `model` (a model or a checkpoint name) and `model_init`.")
    if model_init is not None and kwargs.get("optimizers", (None, None)) != (None, None):
        raise ValueError(
            "`optimizers` holds the parameters of one model, and `model_init` makes a new model for each `train()`: "
            "pass `optimizer_cls_and_kwargs=(OptimizerClass, {...})` instead."
        )
    check_refused_fields(args)
    TargetLoss(args.label_smoothing_factor, kwargs.get("compute_loss_func"))  # raises on a contradiction


def check_optimizer_covers(optimizer, model: nn.Module) -> None:
    """Raise `ValueError` when a user's optimizer (`optimizers=(optimizer, scheduler)`) leaves out parameters that
    train: those SmileTrainer adds after the user built it (LoRA layers with `peft_config`, the source head of SMILE
    and Co-Tuning) would never change."""
    if optimizer is None:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if missing:
        raise ValueError(
            f"The optimizer passed in `optimizers` leaves out {len(missing)} parameters that train (e.g. "
            f"'{missing[0]}'), added by SmileTrainer after it was built (LoRA layers, the source head): pass "
            "`optimizer_cls_and_kwargs=(OptimizerClass, {...})` instead, and SmileTrainer builds it over every one."
        )


def check_trial_arguments(args: TrainingArguments) -> None:
    """Check the arguments as at construction after a hyperparameter-search trial set some of them with `setattr`:
    the method string is parsed again and SmileTrainingArguments' own checks run again (every one-line error). Not
    the whole `__post_init__`: a second `TrainingArguments` set-up resets the accelerator state of the running
    Trainer."""
    from .methods import parse_method

    args.regularizer, args.mixing = parse_method(args.method.strip().lower())
    args._validate_smile_arguments()
    check_refused_fields(args)


def keep_pristine(teacher_model, model_init) -> Any:
    """With `model_init`, a teacher given as a model is kept as an untouched copy (the EMA updates the teacher in
    place, and every new student needs the pre-trained one); otherwise it is kept as it is."""
    return fresh_copy(teacher_model, model_init)


def fresh_copy(teacher_model, model_init) -> Any:
    """With `model_init`, a copy of a teacher given as a model; otherwise (and for names or None) the argument."""
    return copy.deepcopy(teacher_model) if model_init is not None and isinstance(teacher_model, nn.Module) else teacher_model


def unclassified(arguments_class: type = TrainingArguments, trainer_class: type | None = None) -> list[str]:
    """One line per field of `arguments_class` (a `TrainingArguments` dataclass) and per `trainer_class.__init__`
    argument (default `transformers.Trainer`) that neither table classifies, saying where to classify it."""
    import inspect

    from transformers import Trainer, __version__

    trainer_class = trainer_class or Trainer
    where = "smile_hf/parity.py {table}: add '{name}' as works (with its test), irrelevant (with the reason) or refused"
    problems = [
        f"TrainingArguments field '{f.name}' (transformers {__version__}) is not classified: "
        + where.format(table="TRAINING_ARGUMENTS", name=f.name)
        for f in fields(arguments_class)
        if f.name not in TRAINING_ARGUMENTS
    ]
    parameters = inspect.signature(trainer_class.__init__).parameters
    problems += [
        f"Trainer.__init__ argument '{name}' (transformers {__version__}) is not classified: "
        + where.format(table="TRAINER_ARGUMENTS", name=name)
        for name, p in parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in TRAINER_ARGUMENTS
    ]
    return problems
