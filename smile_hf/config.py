# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Training arguments of [`SmileTrainer`]: the training setup, the method spec, the mixing, and every hyperparameter
that a registered regulariser declares (generated from its [`HyperParameter`]s: this module names none of them)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments
from transformers.utils import logging

from ._compat import accelerator_available
from .activation_checkpointing import check_activation_checkpointing
from .calibration import CALIBRATIONS
from .guard import NAN_POLICIES
from .methods import REGULARIZERS, declared_hyperparameters, parse_method
from .parity import check_precision, check_refused_fields
from .recipes import REFERENCE_RECIPE, apply_recipe

logger = logging.get_logger(__name__)

_PICKLING_FOR_DISK: ContextVar[bool] = ContextVar("_PICKLING_FOR_DISK", default=False)


@contextmanager
def secrets_left_out() -> Iterator[None]:
    """While inside, a pickled [`SmileTrainingArguments`] (the Trainer's `training_args.bin`) holds no Hub token:
    `hub_token` is `None` and `model_init_kwargs` has no `token`. The arguments in memory keep them (the upload and
    the loading of a private model still use them); copies and other pickles (Ray's workers) keep them too."""
    reset = _PICKLING_FOR_DISK.set(True)
    try:
        yield
    finally:
        _PICKLING_FOR_DISK.reset(reset)

_STOCK = {f.name: f.default for f in fields(TrainingArguments)}
NOT_SET_FIELDS = (
    "optim", "learning_rate", "weight_decay", "max_grad_norm", "lr_scheduler_type", "per_device_train_batch_size",
)  # fmt: skip
"""The `TrainingArguments` fields that [`REFERENCE_RECIPE`] sets, redeclared with a `None` default ("not set"): a
dataclass cannot tell a value passed equal to its default from the default, and the recipe never replaces a value the
user passed. Unset, they get the recipe's value with `reference_recipe`, else the stock `TrainingArguments` default.
(`optim_args` and `lr_step_fraction`, the recipe's other fields, default to `None` anyway.)"""


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
    "calibration", "eval_loss_terms",
)  # fmt: skip


def _unset_help(name: str, text: str) -> str:
    return (
        f"{text} (None: not set, so that --reference_recipe fills only the fields you did not pass.) Default: "
        f"{_STOCK[name]!r}; with --reference_recipe: {REFERENCE_RECIPE.values[name]!r}."
    )


def _add_method_fields(cls: type, hyperparameters) -> type:
    """Declare one dataclass field per [`HyperParameter`] on `cls` (before `@dataclass` processes it), and list them
    in its docstring."""
    for hyperparameter in hyperparameters:
        cls.__annotations__[hyperparameter.name] = hyperparameter.annotation
        setattr(cls, hyperparameter.name, hyperparameter.as_field())
    cls._method_fields = getattr(cls, "_method_fields", frozenset()) | {h.name for h in hyperparameters}
    entries = "\n".join(h.docstring() for h in hyperparameters).replace("\n", "\n        ")
    cls.__doc__ = (cls.__doc__ or "").rstrip() + ("\n\n        " + entries + "\n" if entries else "")
    return cls


def _with_registered_method_fields(cls: type) -> type:
    return _add_method_fields(cls, tuple(declared_hyperparameters().values()))


@dataclass
@_with_registered_method_fields
class SmileTrainingArguments(TrainingArguments):
    r"""
    Configuration class for [`SmileTrainer`].

    Extends [`~transformers.TrainingArguments`] with the hyperparameters of SMILE (Self-Distilled MIxup for Efficient
    Transfer LEarning, arXiv 2103.13941) and of the transfer-learning baselines it is compared against. Every default
    of the SMILE group is the default of the authors' reference implementation.

    Parameters:
        > Parameters that choose the method

        method (`str`, *optional*, defaults to `"smile"`):
            Training method, as a *method spec*: a regulariser (`"finetune"`, `"smile"`, `"l2sp"`, `"delta"`, `"bss"`, `"rifle"`,
            `"cotuning"`), a mixing strategy (`"mixup"`, `"cutmix"`, `"manifold_mixup"`, which mean plain
            fine-tuning with that mixing), or both joined by `+` (e.g. `"l2sp+mixup"`, `"smile+cutmix"`).
            `"smile"` alone mixes with mixup, as in the paper.
        reference_recipe (`bool`, *optional*, defaults to `False`):
            Apply the recipe `"reference"` ([`smile_hf.recipes.REFERENCE_RECIPE`]): the optimisation of the SMILE
            reference (SGD, Nesterov momentum 0.9, lr 0.01, weight decay 1e-4, no gradient clipping, batch 48, lr x0.1
            once at `lr_step_fraction`), through [`smile_hf.recipes.apply_recipe`], for every one of these fields
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
        eval_loss_terms (`bool`, *optional*, defaults to `True`):
            Whether evaluation also logs the method's loss terms (`eval_loss_main`, `eval_loss_aux`...; see
            [`~SmileTrainer.evaluate`]). For a method with terms of its own they cost one forward pass of the
            teacher per evaluation batch (the student's features are read from the evaluation's own forward pass;
            with `channels_last`, one more forward pass of the student); `False` evaluates at the stock `Trainer`'s
            cost.
        teacher_fold_batchnorm (`bool`, *optional*, defaults to `False`):
            The teacher's forward pass runs a copy of the teacher with every BatchNorm that follows a convolution
            folded into it ([`smile_hf.folding.ForwardCopy`]), refolded after each EMA update; the EMA shadow
            stays unfolded and exact. Equal to the unfolded teacher up to float rounding (see the speed page of the
            docs for the measured differences). CNNs only; models without BatchNorm and LoRA teachers run as they
            are.
        teacher_channels_last (`bool`, *optional*, defaults to `False`):
            The teacher's forward pass runs a copy of the teacher whose 4-D weights and input are in the
            channels-last memory format, refreshed after each EMA update (whatever `channels_last` says of the
            student): faster convolutions and pooling for CNNs, equal up to float rounding.
        teacher_bf16 (`bool`, *optional*, defaults to `False`):
            With `bf16=True`, the teacher's forward pass runs a bf16 copy of the teacher, re-cast after each EMA
            update, instead of casting its float32 weights under autocast at every forward pass. The EMA shadow
            stays in float32 (a bf16 shadow would round the small EMA increments to zero).
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
        backbone_lr_multiplier (`float`, *optional*, defaults to `1.0`):
            The backbone trains at `learning_rate x backbone_lr_multiplier`; the new head (and an attached source
            head) at `learning_rate` (TLlib's fine-tuning scripts: 0.1). See [`smile_hf.param_groups`].
        layer_decay (`float` or `None`, *optional*, defaults to `None`):
            Layer-wise learning-rate decay (BEiT): the backbone parameters of layer `l` of `L + 1` train at
            `learning_rate x backbone_lr_multiplier x layer_decay ** (L + 1 - l)`, the layers being the backbone
            stages the adapter finds. See [`smile_hf.param_groups`].
        calibration (`str`, *optional*, defaults to `"none"`):
            `"temperature"`: the model must be calibrated before it is saved, with
            `trainer.calibrate(validation_dataset)` (one temperature fitted on a split that is neither trained nor
            evaluated on, folded into the exported head: see [`smile_hf.calibration`]); `save_model` refuses an
            uncalibrated model. Off by default: it needs a split of its own, and changes the exported probabilities.

        > Parameters that control mixing

        mixup_alpha (`float`, *optional*, defaults to `0.2`):
            Mixup coefficient lambda ~ Beta(alpha, alpha), for SMILE, `mixup` and `manifold_mixup`.
        cutmix_alpha (`float`, *optional*, defaults to `1.0`):
            CutMix coefficient lambda ~ Beta(alpha, alpha) for `cutmix`.

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
            Unless it says otherwise, `non_blocking` is on when `dataloader_pin_memory` is and an accelerator is used: batches go to the accelerator with non-blocking copies
            from pinned memory, so that loading a batch does not wait for the previous step to finish.
        optim, learning_rate, weight_decay, max_grad_norm, lr_scheduler_type, per_device_train_batch_size
            (*optional*, default to `None`, "not set"): resolved when the arguments are built, to the reference
            recipe's value with `reference_recipe=True`, else to the `TrainingArguments` default. `None` stays the
            default of these six only: it is how the recipe knows that a value, even one equal to the stock
            default, was passed ([`NOT_SET_FIELDS`]).

        > Parameters of the regularisers

        One field per hyperparameter that a registered regulariser declares (`Regularizer.hyperparameters`),
        generated from the declaration; the fields of a regulariser registered after `smile_hf` was imported are
        those of `SmileTrainingArguments.with_methods()`.
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
    backbone_lr_multiplier: float = field(
        default=1.0,
        metadata={"help": "The backbone trains at learning_rate x this, the new head at learning_rate (TLlib: 0.1)."},
    )
    layer_decay: float | None = field(
        default=None,
        metadata={"help": "Layer-wise lr decay in (0, 1] (BEiT: 0.75): stage l of L trains at lr x decay^(L+1-l)."},
    )
    eval_loss_terms: bool = field(
        default=True,
        metadata={"help": "Log the method's loss terms in evaluation (eval_loss_aux, eval_loss_reg...): one "
                  "forward pass of the teacher per evaluation batch for methods with terms of their own (the "
                  "student's is the evaluation's own). False: evaluation at the stock Trainer's cost, eval_loss only."},
    )  # fmt: skip
    teacher_fold_batchnorm: bool = field(
        default=False,
        metadata={"help": "The teacher's forward runs a copy of it with every BatchNorm that follows a convolution "
                  "folded into that convolution (refolded after each EMA update; the EMA itself stays unfolded): "
                  "a cheaper forward for CNNs, equal up to float rounding. No effect on models without BatchNorm "
                  "or on a LoRA teacher."},
    )  # fmt: skip
    teacher_channels_last: bool = field(
        default=False,
        metadata={"help": "The teacher's forward runs a copy of it in the channels-last memory format (refreshed "
                  "after each EMA update), whatever channels_last is: faster convolutions and pooling for CNNs."},
    )  # fmt: skip
    teacher_bf16: bool = field(
        default=False,
        metadata={"help": "With bf16=True: the teacher's forward runs a bf16 copy of it (re-cast after each EMA "
                  "update; the EMA itself stays in float32, so that no small update rounds to zero)."},
    )  # fmt: skip
    calibration: str = field(
        default="none",
        metadata={"help": "'temperature': fit one temperature on a validation split after training and fold it into "
                  "the exported head (calibrated probabilities from pipeline()); 'none': no calibration.",
                  "choices": list(CALIBRATIONS)},
    )  # fmt: skip
    reference_recipe_applied: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Recorded, not set: the fields reference_recipe filled (kept by dataclasses.replace and "
                  "saved with the arguments)."},
    )

    unlabeled_batch_ratio: float | None = field(
        default=None,
        metadata={"help": "With SmileTrainer(unlabeled_dataset=...): unlabelled images per labelled image in each "
                  "step (round(ratio x per_device_train_batch_size), at least 1). Unset: the method's default, 1 for "
                  "SMILE (its unlabelled terms see as many images as its labelled ones, for about twice the step's "
                  "cost), 7 for FixMatch (the paper's mu)."},
    )  # fmt: skip

    # ---- mixing ---------------------------------------------------------------------------------------------
    mixup_alpha: float = field(
        default=0.2, metadata={"help": "Beta(alpha, alpha) parameter of mixup (SMILE, mixup, manifold_mixup)."}
    )
    cutmix_alpha: float = field(default=1.0, metadata={"help": "Beta(alpha, alpha) parameter of CutMix."})

    def __post_init__(self):
        self.method = self.method.strip().lower()
        # the regulariser's name and the mixing strategy of the method spec (`regularizer`: a public attribute, whose
        # spelling predates the package's "regulariser" and is kept for the code that reads it)
        self.regularizer, self.mixing = parse_method(self.method)
        if isinstance(self.model_init_kwargs, str):
            self.model_init_kwargs = json.loads(self.model_init_kwargs)
        self.reference_recipe_applied = self._recorded_recipe() | self._apply_reference_recipe()
        if self.reference_recipe_applied:
            logger.info(f"reference_recipe set {self.reference_recipe_applied}")
        self._validate_smile_arguments()
        check_refused_fields(self)  # smile_hf.parity: the TrainingArguments fields SmileTrainer refuses, in one line
        unset_non_blocking = self.accelerator_config is None or (
            isinstance(self.accelerator_config, dict) and "non_blocking" not in self.accelerator_config
        )
        super().__post_init__()
        check_precision(self)  # smile_hf.parity: fp16 on the CPU would be silently ignored
        check_activation_checkpointing(self)  # manifold mixup, reentrant checkpointing with inner feature maps
        self._default_non_blocking(unset_non_blocking)

    def _default_non_blocking(self, unset: bool) -> None:
        """Turn `accelerator_config.non_blocking` on when the user left it unset (no `accelerator_config`, or a dict
        without the key; an `AcceleratorConfig` instance or a JSON file is taken as it is) and batches are pinned.

        This runs after `TrainingArguments.__post_init__` on purpose: only then is `dataloader_pin_memory` final (the
        stock `__post_init__` turns it off with `use_cpu`), and non-blocking copies from unpinned memory gain nothing
        (nor do they on a machine without an accelerator, where torch would warn that pinning is unavailable).
        The `AcceleratorConfig` built there is a plain dataclass that the `Trainer` reads once, when it creates its
        accelerator, so setting the field afterwards is seen; the one stock check on it (a warning when pinning is
        off) cannot apply, since the field is only set when pinning is on."""
        if unset and self.dataloader_pin_memory and not self.use_cpu and accelerator_available():
            self.accelerator_config.non_blocking = True

    @classmethod
    def with_methods(cls) -> type[SmileTrainingArguments]:
        """The arguments class with a field for every hyperparameter of every registered regulariser.

        The fields of a dataclass are fixed when its class is created, so the hyperparameters of a regulariser
        registered after `smile_hf` was imported (a module of your own) are not fields of `SmileTrainingArguments`.
        This returns `cls` itself when every declared hyperparameter is a field, else a subclass (created once per
        set of new hyperparameters) that adds them, with their `--help`, checks and model-card lines; pass it to
        `HfArgumentParser` or instantiate it like `SmileTrainingArguments`. (A field keeps the declaration it was
        created from: a regulariser registered again with `replace=True` and another default does not change it.)

        ```python
        register_regularizer(MyRegulariser)  # declares HyperParameter("my_weight", 0.1, "Mine: weight of ...")
        args_class = SmileTrainingArguments.with_methods()
        (args,) = HfArgumentParser(args_class).parse_args_into_dataclasses()  # --method mine --my_weight 0.5
        ```
        """
        present = {f.name for f in fields(cls)}
        new = tuple(h for name, h in declared_hyperparameters().items() if name not in present)
        if not new:
            return cls
        name = f"{cls.__name__}_{'_'.join(h.name for h in new)}"
        module = sys.modules[__name__]
        if not isinstance(getattr(module, name, None), type):
            subclass = type(name, (cls,), {"__annotations__": {}, "__module__": __name__, "__qualname__": name})
            subclass.__doc__ = cls.__doc__
            setattr(module, name, dataclass(_add_method_fields(subclass, new)))  # picklable, as the Trainer needs
        return getattr(module, name)

    def _check_regulariser_fields(self) -> None:
        """Refuse a hyperparameter of the chosen regulariser that is named like a training argument; say which ones
        are no fields of this class (a regulariser registered after the import: they keep their defaults)."""
        own = [h.name for h in REGULARIZERS[self.regularizer].hyperparameters]
        clash = [n for n in own if n not in self._method_fields and n in {f.name for f in fields(self)}]
        if clash:
            raise ValueError(
                f"Regulariser '{self.regularizer}' declares a hyperparameter `{clash[0]}`, which is a training "
                "argument of SmileTrainingArguments: give the hyperparameter another name."
            )
        missing = [n for n in own if n not in self._method_fields]
        if missing:
            logger.warning(
                f"{missing} of '{self.regularizer}' are not fields of {type(self).__name__} and keep their defaults: "
                "use SmileTrainingArguments.with_methods() to set them."
            )

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
        kwargs = self.to_dict().get("model_init_kwargs")  # a token changes no weight: a rerun may pass another one
        values["model_init_kwargs"] = {k: v for k, v in kwargs.items() if k != "token"} if isinstance(kwargs, dict) else kwargs
        values["world_size"] = self.world_size
        return json.loads(json.dumps(values, default=lambda v: getattr(v, "value", str(v))))

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state; inside [`secrets_left_out`] (every file the Trainer pickles the arguments into),
        without the Hub tokens."""
        state = dict(self.__dict__)
        if _PICKLING_FOR_DISK.get():
            state["hub_token"] = None
            if isinstance(state.get("model_init_kwargs"), dict):
                state["model_init_kwargs"] = {k: v for k, v in state["model_init_kwargs"].items() if k != "token"}
        return state

    def to_dict(self) -> dict[str, Any]:
        """`TrainingArguments.to_dict`, with a Hub token in `model_init_kwargs` masked like `hub_token` (the dict goes
        into `training_args.json`, saved with every model)."""
        d = super().to_dict()
        if isinstance(d.get("model_init_kwargs"), dict) and d["model_init_kwargs"].get("token") not in (None, False):
            d["model_init_kwargs"] = {**d["model_init_kwargs"], "token": "<TOKEN>"}
        return d

    def _apply_reference_recipe(self) -> dict[str, Any]:
        """With `reference_recipe`, apply [`REFERENCE_RECIPE`] to the fields the user did not set (a recipe field
        holding `None`); then give every field of [`NOT_SET_FIELDS`] still unset its stock default. Returns what the
        recipe set."""
        applied = {}
        if self.reference_recipe:
            given = {name for name in REFERENCE_RECIPE.values if getattr(self, name) is not None}
            applied = apply_recipe(REFERENCE_RECIPE, given, self)
        for name in NOT_SET_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, _STOCK[name])
        return applied

    def _validate_smile_arguments(self) -> None:
        declared = declared_hyperparameters()
        for f in fields(self):  # every regulariser's field, checked by its declaration
            if f.name in declared and f.name in self._method_fields:
                declared[f.name].check(getattr(self, f.name))
        self._check_regulariser_fields()
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"`nan_policy` must be one of {NAN_POLICIES}, got '{self.nan_policy}'.")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"`calibration` must be one of {CALIBRATIONS}, got '{self.calibration}'.")
        if self.teacher_bf16 and not self.bf16:
            raise ValueError("`teacher_bf16` runs the teacher in bf16 under bf16 autocast: set bf16=True as well.")
        if self.max_consecutive_skips < 0:
            raise ValueError(f"`max_consecutive_skips` must be >= 0, got {self.max_consecutive_skips}.")
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
        if not self.backbone_lr_multiplier >= 0.0:
            raise ValueError(
                f"`backbone_lr_multiplier` must be >= 0 (0 freezes the backbone), got {self.backbone_lr_multiplier}."
            )
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"`layer_decay` must be in (0, 1] (e.g. 0.75 as in BEiT), got {self.layer_decay}.")
        if self.unlabeled_batch_ratio is not None and not self.unlabeled_batch_ratio > 0:
            raise ValueError(f"`unlabeled_batch_ratio` must be > 0 (e.g. 1), got {self.unlabeled_batch_ratio}.")
        if not 0.0 < self.lr_step_gamma <= 1.0:
            raise ValueError(f"`lr_step_gamma` must be in (0, 1], got {self.lr_step_gamma}.")
