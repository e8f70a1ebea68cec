# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Training arguments of [`SmileTrainer`]: every hyperparameter of SMILE and of the baselines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments
from transformers.utils import logging

from .guard import NAN_POLICIES
from .methods import parse_method
from .parity import check_refused_fields

logger = logging.get_logger(__name__)

# The reference recipe of SMILE (PaddlePaddle/Research, CV/SMILE/finetune.py): 9000 iterations in all,
# the last 1000 plain fine-tuning, the learning rate x0.1 once at iteration floor(2 * (9000 + 1000) / 3).
REFERENCE_TOTAL_STEPS = 9000
REFERENCE_FINAL_FINETUNE_FRACTION = 1000 / REFERENCE_TOTAL_STEPS
REFERENCE_LR_STEP_FRACTION = (2 * (9000 + 1000) // 3) / REFERENCE_TOTAL_STEPS

# What `reference_recipe=True` puts into the fields the user did not set. `optim_args` is set only when the optimizer
# is the recipe's, and `lr_step_fraction` only when it is unset.
REFERENCE_RECIPE = {
    "optim": "sgd",
    "optim_args": "momentum=0.9,nesterov=True",
    "learning_rate": 0.01,
    "weight_decay": 1e-4,
    "max_grad_norm": 0.0,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 48,
    "lr_step_fraction": REFERENCE_LR_STEP_FRACTION,
}

_STOCK = {f.name: f.default for f in fields(TrainingArguments)}
RECIPE_FIELDS = (
    "optim", "learning_rate", "weight_decay", "max_grad_norm", "lr_scheduler_type", "per_device_train_batch_size",
)  # fmt: skip
"""`TrainingArguments` fields redeclared with a `None` default ("not set"): with `reference_recipe` the recipe's value
is used, else the stock `TrainingArguments` default. A value the user passed is never replaced."""


RUN_DEFINING_STOCK_FIELDS = (
    "seed", "data_seed", "learning_rate", "weight_decay", "optim", "optim_args", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio",
    "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "fp16",
    "label_smoothing_factor", "dataloader_drop_last",
)  # fmt: skip
"""The `TrainingArguments` fields that change the trained weights (with every field SmileTrainingArguments adds but
the failure policy and the output options): two runs that agree on them train the same model."""
_NOT_RUN_DEFINING = (
    "nan_policy", "max_consecutive_skips", "overwrite_output_dir", "reference_recipe", "reference_recipe_applied",
)  # fmt: skip


def _unset_help(name: str, text: str) -> str:
    return f"{text} Default: {_STOCK[name]!r}; with --reference_recipe: {REFERENCE_RECIPE[name]!r}."


@dataclass
class SmileTrainingArguments(TrainingArguments):
    r"""
    Configuration class for [`SmileTrainer`].

    Extends [`~transformers.TrainingArguments`] with the hyperparameters of SMILE (Self-Distilled MIxup for Efficient
    Transfer LEarning, arXiv 2103.13941) and of the transfer-learning baselines it is compared against. Every default
    of the SMILE group is the default of the authors' reference implementation.

    Parameters:
        > Parameters that choose the method

        method (`str`, *optional*, defaults to `"smile"`):
            Training method: a regulariser (`"finetune"`, `"smile"`, `"l2sp"`, `"delta"`, `"bss"`, `"rifle"`,
            `"cotuning"`), a mixing strategy (`"mixup"`, `"cutmix"`, `"manifold_mixup"`, which mean plain
            fine-tuning with that mixing), or both joined by `+` (e.g. `"l2sp+mixup"`, `"smile+cutmix"`).
            `"smile"` alone mixes with mixup, as in the paper.
        reference_recipe (`bool`, *optional*, defaults to `False`):
            Use the optimisation recipe of the SMILE reference (SGD, Nesterov momentum 0.9, lr 0.01, weight decay
            1e-4, no gradient clipping, batch 48, lr x0.1 once at `lr_step_fraction`) for every one of these fields
            that was not set (see "Defaults that differ" below): a value passed explicitly is always kept, even one
            equal to the `TrainingArguments` default. What the recipe set is recorded in `reference_recipe_applied`
            (a field: saved with the arguments and kept by `dataclasses.replace`). The single lr step is part of the
            recipe's schedule only: with a `lr_scheduler_type` the user passed, `lr_step_fraction` stays unset.
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            For run scripts ([`smile_hf.checkpoints.resume_point`]): start fresh in an `output_dir` that holds another
            run or a finished one, deleting its checkpoints. The Trainer itself does not read it.
        channels_last (`bool`, *optional*, defaults to `False`):
            Put the student's and the teacher's 4-D weights and the training batches in the channels-last memory
            format, which GPUs with tensor cores convolve faster (CNNs; other models are left as they are).
        nan_policy (`str`, *optional*, defaults to `"stop"`):
            What a step with a non-finite loss term does. `"stop"` raises `NonFiniteLossError` (naming the first
            non-finite step, its terms and the last finite values) at the next logging step, save or end of
            training, and writes nothing after the divergence: the step itself never waits for the device.
            `"stop_at_step"` raises before the weights change, and `"skip_step"` drops the step's gradients (weights
            and optimizer state unchanged); both read a flag before every optimizer step (one host sync per step).
        max_consecutive_skips (`int`, *optional*, defaults to 10):
            With `nan_policy="skip_step"`, the number of steps skipped in a row after which the run stops anyway.
        model_init_kwargs (`dict` or `str`, *optional*):
            Keyword arguments of `from_pretrained` when [`SmileTrainer`] is given a checkpoint name instead of a
            model: where to load from (`cache_dir`, `revision`, `token`, `trust_remote_code`...; also used for the
            source model and the image processor) and how (`torch_dtype`...), and `num_labels` / `id2label` when
            the training set has no `ClassLabel` column. A JSON string is accepted (command line).
        lr_step_fraction (`float` or `None`, *optional*, defaults to `None`):
            If set, multiply the learning rate by `lr_step_gamma` once, after this fraction of the training steps
            (step decay of the reference: 6666/9000). Requires `lr_scheduler_type="constant"`.
        lr_step_gamma (`float`, *optional*, defaults to `0.1`):
            Factor of the single learning-rate step.

        > Parameters that control mixing

        mixup_alpha (`float`, *optional*, defaults to `0.2`):
            Mixup coefficient lambda ~ Beta(alpha, alpha), for SMILE, `mixup` and `manifold_mixup`.
        cutmix_alpha (`float`, *optional*, defaults to `1.0`):
            CutMix coefficient lambda ~ Beta(alpha, alpha) for `cutmix`.

        > Parameters that control SMILE

        reg_lambda (`float`, *optional*, defaults to `0.01`):
            Weight of the sample-to-feature mixup term `L_reg` (distance between the student's feature map of the
            mixed image and the mix of the teacher's feature maps).
        aux_lambda (`float`, *optional*, defaults to `0.1`):
            Weight of the auxiliary-head term `L_aux` (soft cross-entropy of the mixed teacher source probabilities).
        cls_lambda (`float`, *optional*, defaults to `1e-4`):
            Weight of `L_cls`, half the squared L2 norm of both heads' parameters.
        ema_decay (`float`, *optional*, defaults to `0.999`):
            Decay d of the mean teacher: `teacher <- d * teacher + (1 - d) * student` (backbone parameters only).
        ema_update_every (`int`, *optional*, defaults to `10`):
            Optimizer steps between two EMA updates of the teacher. Use 1 with `ema_decay=0.999**0.1` for a
            per-step EMA with the same effective decay.
        ema_buffers (`bool`, *optional*, defaults to `False`):
            Also average floating-point buffers (BatchNorm running statistics). The reference does not.
        final_finetune_fraction (`float`, *optional*, defaults to `1/9`):
            Fraction of the training steps, at the end, trained with plain fine-tuning (no mixing, no teacher, no
            EMA): the reference trains the last 1000 of 9000 iterations so.

        > Parameters that control the baselines

        l2sp_alpha (`float`, *optional*, defaults to `0.01`):
            L2-SP: weight of 1/2 ||w - w0||^2 on the pre-trained backbone weights.
        l2sp_beta (`float`, *optional*, defaults to `0.01`):
            L2-SP, DELTA: weight of 1/2 ||w||^2 on the new head.
        delta_alpha (`float`, *optional*, defaults to `0.01`):
            DELTA: weight of the feature-map distance to the frozen pre-trained backbone.
        delta_attention (`bool`, *optional*, defaults to `True`):
            DELTA: weight channels by their importance for the target task (computed once before training).
        delta_attention_batches (`int`, *optional*, defaults to `10`):
            DELTA: batches used to measure each channel's importance.
        delta_attention_epochs (`int`, *optional*, defaults to `10`):
            DELTA: epochs of training of the linear classifier (on frozen pre-trained features) whose loss increase
            measures each channel's importance (TLlib: 10).
        delta_num_layers (`int`, *optional*, defaults to `4`):
            DELTA: number of backbone stages (counted from the last) whose outputs are regularised.
        bss_lambda (`float`, *optional*, defaults to `0.001`):
            BSS: weight of the sum of the k smallest squared singular values of the batch features.
        bss_k (`int`, *optional*, defaults to `1`):
            BSS: number of smallest singular values penalised.
        rifle_num_reinits (`int`, *optional*, defaults to `1`):
            RIFLE: how many times the new head is re-initialised, evenly spaced over training.
        cotuning_lambda (`float`, *optional*, defaults to `2.3`):
            Co-Tuning: weight of the source-head cross-entropy against the translated source labels.

        > Defaults that differ from `TrainingArguments`

        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            The image transforms (`set_transform`) read the image column, which the stock default would drop.
        label_names (`list[str]`, *optional*, defaults to `["labels"]`):
            The label column, so that evaluation reports its loss and metrics for any model class.
        ddp_find_unused_parameters (`bool`, *optional*, defaults to `False`):
            The auxiliary (source) head is applied inside the student's forward pass but its output is not one of the
            model's outputs, which DDP's search for unused parameters cannot follow.
        logging_nan_inf_filter (`bool`, *optional*, defaults to `False`):
            The stock filter reads every micro-batch's loss on the host (a sync per micro-batch); the guard of
            `nan_policy` handles non-finite losses instead.
        accelerator_config (`dict`, *optional*):
            Unless it says otherwise, `non_blocking` is on when `dataloader_pin_memory` is: batches go to the accelerator with non-blocking copies
            from pinned memory, so that loading a batch does not wait for the previous step to finish.
        optim, learning_rate, weight_decay, max_grad_norm, lr_scheduler_type, per_device_train_batch_size
            (*optional*, default to `None`, "not set"): resolved when the arguments are built, to the reference
            recipe's value with `reference_recipe=True`, else to the `TrainingArguments` default.
    """

    # ---- defaults that differ from TrainingArguments --------------------------------------------------------
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Drop the dataset columns the model's forward does not take (False: the transforms read them)."},
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "The label column(s) of the batches."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP's search for unused parameters (False: the attached source head is used every step)."},
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={"help": "Replace non-finite losses in the logged loss (a host sync per micro-batch; False: the "
                  "nan_policy guard handles them)."},
    )
    optim: str | None = field(default=None, metadata={"help": _unset_help("optim", "The optimizer.")})
    learning_rate: float | None = field(
        default=None, metadata={"help": _unset_help("learning_rate", "The initial learning rate.")}
    )
    weight_decay: float | None = field(default=None, metadata={"help": _unset_help("weight_decay", "Weight decay.")})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": _unset_help("max_grad_norm", "Gradient clipping norm (0: none).")}
    )
    lr_scheduler_type: str | None = field(
        default=None, metadata={"help": _unset_help("lr_scheduler_type", "The learning-rate schedule.")}
    )
    per_device_train_batch_size: int | None = field(
        default=None, metadata={"help": _unset_help("per_device_train_batch_size", "Training batch size per device.")}
    )

    # ---- method ---------------------------------------------------------------------------------------------
    method: str = field(
        default="smile",
        metadata={
            "help": "Training method: finetune, smile, l2sp, delta, bss, rifle, cotuning, a mixing strategy (mixup, "
            "cutmix, manifold_mixup) or a regulariser and a mixing strategy joined by '+' (e.g. l2sp+mixup)."
        },
    )
    reference_recipe: bool = field(
        default=False,
        metadata={
            "help": "Use the SMILE reference optimisation recipe (SGD Nesterov 0.9, lr 0.01, wd 1e-4, no clipping, "
            "batch 48, one lr step x0.1) for the optimisation fields that are not set."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Run scripts: start a fresh run in an output_dir that holds another or a finished one (its "
            "checkpoints are deleted). Without it, such an output_dir is an error, never silently reused."
        },
    )
    channels_last: bool = field(
        default=False,
        metadata={"help": "Train in the channels-last memory format (faster convolutions on recent GPUs, for CNNs)."},
    )
    nan_policy: str = field(
        default="stop",
        metadata={
            "help": "A step with a non-finite loss term: 'stop' (raise at the next log, save or end, naming the "
            "step, its terms and the last finite values; no host sync in the step), 'stop_at_step' (raise before "
            "the weights change) or 'skip_step' (leave the weights and optimizer state unchanged); the last two "
            "read a flag before every optimizer step.",
            "choices": list(NAN_POLICIES),
        },
    )
    max_consecutive_skips: int = field(
        default=10, metadata={"help": "With nan_policy='skip_step': steps skipped in a row before stopping anyway."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "from_pretrained keyword arguments (JSON) when SmileTrainer loads the model from a name: "
            "cache_dir, revision, token, trust_remote_code, torch_dtype, num_labels, id2label..."
        },
    )
    lr_step_fraction: float | None = field(
        default=None,
        metadata={"help": "Multiply the lr by lr_step_gamma once after this fraction of training (needs constant lr)."},
    )
    lr_step_gamma: float = field(default=0.1, metadata={"help": "Factor of the single learning-rate step."})
    reference_recipe_applied: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Recorded, not set: the fields reference_recipe filled (kept by dataclasses.replace and "
                  "saved with the arguments)."},
    )

    # ---- mixing ---------------------------------------------------------------------------------------------
    mixup_alpha: float = field(
        default=0.2, metadata={"help": "Beta(alpha, alpha) parameter of mixup (SMILE, mixup, manifold_mixup)."}
    )
    cutmix_alpha: float = field(default=1.0, metadata={"help": "Beta(alpha, alpha) parameter of CutMix."})

    # ---- SMILE ----------------------------------------------------------------------------------------------
    reg_lambda: float = field(default=0.01, metadata={"help": "SMILE: weight of the feature mixup term L_reg."})
    aux_lambda: float = field(default=0.1, metadata={"help": "SMILE: weight of the auxiliary-head term L_aux."})
    cls_lambda: float = field(default=1e-4, metadata={"help": "SMILE: weight of L_cls (1/2 squared norm of both heads)."})
    ema_decay: float = field(default=0.999, metadata={"help": "SMILE: decay of the EMA (mean) teacher, in [0, 1]."})
    ema_update_every: int = field(default=10, metadata={"help": "SMILE: optimizer steps between EMA updates."})
    ema_buffers: bool = field(
        default=False, metadata={"help": "SMILE: also average BatchNorm running statistics (the reference does not)."}
    )
    final_finetune_fraction: float = field(
        default=REFERENCE_FINAL_FINETUNE_FRACTION,
        metadata={"help": "SMILE: fraction of steps at the end trained with plain fine-tuning (reference: 1000/9000)."},
    )

    # ---- baselines ------------------------------------------------------------------------------------------
    l2sp_alpha: float = field(default=0.01, metadata={"help": "L2-SP: weight of 1/2 ||w - w0||^2 on the backbone."})
    l2sp_beta: float = field(default=0.01, metadata={"help": "L2-SP and DELTA: weight of 1/2 ||w||^2 on the new head."})
    delta_alpha: float = field(default=0.01, metadata={"help": "DELTA: weight of the feature-map distance."})
    delta_attention: bool = field(
        default=True, metadata={"help": "DELTA: weight channels by their importance for the target task."}
    )
    delta_attention_batches: int = field(
        default=10, metadata={"help": "DELTA: batches used to measure channel importance."}
    )
    delta_attention_epochs: int = field(
        default=10, metadata={"help": "DELTA: epochs of the linear classifier trained on frozen features for the attention."}
    )
    delta_num_layers: int = field(default=4, metadata={"help": "DELTA: number of last backbone stages regularised."})
    bss_lambda: float = field(default=0.001, metadata={"help": "BSS: weight of the spectral shrinkage penalty."})
    bss_k: int = field(default=1, metadata={"help": "BSS: number of smallest singular values penalised."})
    rifle_num_reinits: int = field(default=1, metadata={"help": "RIFLE: number of re-initialisations of the head."})
    cotuning_lambda: float = field(default=2.3, metadata={"help": "Co-Tuning: weight of the source-head term."})

    def __post_init__(self):
        self.method = self.method.strip().lower()
        self.regularizer, self.mixing = parse_method(self.method)
        if isinstance(self.model_init_kwargs, str):
            self.model_init_kwargs = json.loads(self.model_init_kwargs)
        self.reference_recipe_applied = self._recorded_recipe() | self._resolve_unset_fields()
        if self.reference_recipe_applied:
            logger.info(f"reference_recipe set {self.reference_recipe_applied}")
        self._validate_smile_arguments()
        check_refused_fields(self)  # smile_hf.parity: the TrainingArguments fields SmileTrainer refuses, in one line
        unset_non_blocking = self.accelerator_config is None or (
            isinstance(self.accelerator_config, dict) and "non_blocking" not in self.accelerator_config
        )
        super().__post_init__()
        self._default_non_blocking(unset_non_blocking)

    def _default_non_blocking(self, unset: bool) -> None:
        """Turn `accelerator_config.non_blocking` on when the user left it unset (no `accelerator_config`, or a dict
        without the key; an `AcceleratorConfig` instance or a JSON file is taken as it is) and batches are pinned.

        This runs after `TrainingArguments.__post_init__` on purpose: only then is `dataloader_pin_memory` final (the
        stock `__post_init__` turns it off with `use_cpu`), and non-blocking copies from unpinned memory gain nothing.
        The `AcceleratorConfig` built there is a plain dataclass that the `Trainer` reads once, when it creates its
        accelerator, so setting the field afterwards is seen; the one stock check on it (a warning when pinning is
        off) cannot apply, since the field is only set when pinning is on."""
        if unset and self.dataloader_pin_memory:
            self.accelerator_config.non_blocking = True

    def _recorded_recipe(self) -> dict[str, Any]:
        """What an earlier build recorded in `reference_recipe_applied` (`dataclasses.replace`, a saved
        `training_args.json`), kept for the fields that still hold the recipe's value."""
        recorded = self.reference_recipe_applied
        recorded = json.loads(recorded) if isinstance(recorded, str) else dict(recorded or {})
        return {k: v for k, v in recorded.items() if self.reference_recipe and getattr(self, k, None) == v}

    def run_defining_values(self) -> dict[str, Any]:
        """The values of every field that changes the trained weights ([`RUN_DEFINING_STOCK_FIELDS`] and the
        method's fields), as JSON values, with the number of processes (it changes the total batch)."""
        stock = {f.name for f in fields(TrainingArguments)}
        names = [n for n in RUN_DEFINING_STOCK_FIELDS if n in stock]
        names += [f.name for f in fields(self) if f.name not in stock and f.name not in _NOT_RUN_DEFINING]
        values = {name: getattr(self, name, None) for name in names}
        values["model_init_kwargs"] = self.to_dict().get("model_init_kwargs")
        values["world_size"] = self.world_size
        return json.loads(json.dumps(values, default=lambda v: getattr(v, "value", str(v))))

    def to_dict(self) -> dict[str, Any]:
        """`TrainingArguments.to_dict`, with a Hub token in `model_init_kwargs` masked like `hub_token` (the dict goes
        into `training_args.json`, saved with every model)."""
        d = super().to_dict()
        if isinstance(d.get("model_init_kwargs"), dict) and d["model_init_kwargs"].get("token") not in (None, False):
            d["model_init_kwargs"] = {**d["model_init_kwargs"], "token": "<TOKEN>"}
        return d

    def _resolve_unset_fields(self) -> dict[str, Any]:
        """Give every field of [`RECIPE_FIELDS`] left at `None` its value: the recipe's with `reference_recipe`,
        else the stock default. Returns what the recipe set."""
        applied = {}
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                value = REFERENCE_RECIPE[name] if self.reference_recipe else _STOCK[name]
                setattr(self, name, value)
                if self.reference_recipe:
                    applied[name] = value
        if not self.reference_recipe:
            return applied
        if self.optim_args is None and str(getattr(self.optim, "value", self.optim)) == REFERENCE_RECIPE["optim"]:
            self.optim_args = applied["optim_args"] = REFERENCE_RECIPE["optim_args"]
        if self.lr_step_fraction is None and "lr_scheduler_type" in applied:  # a schedule the user passed is kept
            self.lr_step_fraction = applied["lr_step_fraction"] = REFERENCE_RECIPE["lr_step_fraction"]
        return applied

    def _validate_smile_arguments(self) -> None:
        non_negative = (
            "reg_lambda", "aux_lambda", "cls_lambda", "l2sp_alpha", "l2sp_beta", "delta_alpha", "bss_lambda",
            "cotuning_lambda",
        )  # fmt: skip
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1], got {self.ema_decay}.")
        for name in ("ema_update_every", "delta_attention_batches", "delta_attention_epochs", "delta_num_layers", "bss_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"`nan_policy` must be one of {NAN_POLICIES}, got '{self.nan_policy}'.")
        if self.max_consecutive_skips < 0:
            raise ValueError(f"`max_consecutive_skips` must be >= 0, got {self.max_consecutive_skips}.")
        if self.rifle_num_reinits < 0:
            raise ValueError(f"`rifle_num_reinits` must be >= 0, got {self.rifle_num_reinits}.")
        if not 0.0 <= self.final_finetune_fraction < 1.0:
            raise ValueError(f"`final_finetune_fraction` must be in [0, 1), got {self.final_finetune_fraction}.")
        alpha_name = "cutmix_alpha" if self.mixing == "cutmix" else "mixup_alpha"
        if self.mixing is not None and getattr(self, alpha_name) <= 0:
            raise ValueError(
                f"`{alpha_name}` must be > 0 with method '{self.method}' (it mixes with {self.mixing}); "
                f"got {getattr(self, alpha_name)}. Use method 'finetune' to train without mixing."
            )
        if self.lr_step_fraction is not None:
            if not 0.0 < self.lr_step_fraction < 1.0:
                raise ValueError(f"`lr_step_fraction` must be in (0, 1), got {self.lr_step_fraction}.")
            if str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)) != "constant":
                raise ValueError(
                    "`lr_step_fraction` replaces the learning-rate schedule: set `lr_scheduler_type='constant'` "
                    f"(got '{self.lr_scheduler_type}') or leave `lr_step_fraction` unset."
                )
        if not 0.0 < self.lr_step_gamma <= 1.0:
            raise ValueError(f"`lr_step_gamma` must be in (0, 1], got {self.lr_step_gamma}.")
