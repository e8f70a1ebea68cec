# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""[`SmileTrainer`]: a `transformers.Trainer` whose `compute_loss` adds mixing and the loss terms of a transfer
learning method (SMILE by default) to the fine-tuning of any supported `AutoModelForImageClassification`.

The trainer only wires the pieces together: the loss of a micro-batch is [`TransferLoss`], the teacher a
[`Teacher`] ([`smile_hf.lora.build_teacher`]), the method's terms a [`Regularizer`], the checkpoint protocol
[`CompleteCheckpointMixin`] and the model card [`smile_hf.model_card`].
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import MISSING, fields
from typing import TYPE_CHECKING, Any

import datasets
import torch
from huggingface_hub import ModelCard
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset, IterableDataset
from transformers import (
    BaseImageProcessor,
    DataCollator,
    EvalPrediction,
    FeatureExtractionMixin,
    PreTrainedModel,
    ProcessorMixin,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    enable_full_determinism,
    set_seed,
)
from transformers.utils import logging

from ._compat import declare_unscaled_loss, mark_scheduler_created
from .activation_checkpointing import check_activation_checkpointing, check_model_supports_activation_checkpointing
from .backbones import SOURCE_HEAD_NAME, BackboneAdapter, ForwardOutput, build_source_head_copy, unwrap_model
from .backbones.text import is_text_classifier
from .calibration import CalibrationResult, calibrate_trainer, check_calibrated
from .channels import fit_datasets_to_model
from .checkpoints import CompleteCheckpointMixin
from .config import SmileTrainingArguments
from .data import TransformEpochCallback, evaluation_processor
from .distributed import add_buffer_sync
from .fsdp import ShardedMethodStateMixin, prepare_teacher_model, save_full_model
from .guard import NonFiniteGuard, NonFiniteGuardCallback, check_finite_weights
from .interrupts import InterruptCallback
from .lora import build_teacher, peft_model_of, save_adapter, wrap_student
from .loss import LossOutput, TransferLoss
from .method_state import MethodStateMixin
from .methods import (
    Regularizer,
    RegularizerCallback,
    RegularizerContext,
    build_regularizer,
    method_hyperparameters,
    method_title,
)
from .metrics import as_compute_metrics
from .model_card import (
    ONNX_CARD_SECTION,
    kept_onnx_section,
    library_tags,
    model_card_from_trainer,
    replace_card_section,
)
from .modeling import (
    attach_source_head,
    fill_label_names,
    label_names_from_dataset,
    load_student_with_classes_of,
    resolve_source_model,
    select_loading_kwargs,
)
from .param_groups import build_grouped_optimizer, check_no_user_optimizer, uses_lr_groups
from .parity import (
    check_optimizer_covers,
    check_trainer_arguments,
    check_trial_arguments,
    fresh_copy,
    keep_pristine,
)
from .sharding import check_resume, check_sharding, is_fsdp2
from .teacher import EmaTeacherCallback, Teacher
from .text_setup import check_source_head, default_collator, load_processor, missing_processor_message
from .unlabeled import UnlabeledStreamMixin, check_unlabeled, describe_unlabeled, unlabeled_record

if TYPE_CHECKING:
    from peft import PeftConfig

logger = logging.get_logger(__name__)

TRAINING_ARGS_JSON_NAME = "training_args.json"
"""The training arguments saved with the model as JSON, readable without unpickling the Trainer's
`training_args.bin`."""


def step_decay_schedule(
    optimizer: torch.optim.Optimizer, num_training_steps: int, warmup_steps: int, fraction: float, gamma: float
) -> LambdaLR:
    """The learning-rate schedule of the SMILE reference: a constant learning rate after the stock linear warm-up
    (`constant_with_warmup`: `step / warmup_steps` for `step < warmup_steps`, step for step), multiplied once by
    `gamma` from step `int(fraction * num_training_steps)` on. Every parameter group is scaled alike."""
    milestone = int(fraction * num_training_steps)

    def factor(step: int) -> float:
        return (step / warmup_steps if step < warmup_steps else 1.0) * (gamma if step >= milestone else 1.0)

    return LambdaLR(optimizer, factor)


def seed_everything(args: TrainingArguments) -> None:
    """Seed every generator with `args.seed` (with `full_determinism`, deterministic kernels too), as
    `Trainer.__init__` does."""
    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)


def as_smile_training_arguments(args: TrainingArguments) -> SmileTrainingArguments:
    """`args` itself when it is a [`SmileTrainingArguments`]; a plain `TrainingArguments` converted to one that keeps
    every value it holds (as TRL's trainers convert theirs), the fields SmileTrainingArguments adds at their defaults
    (the method is SMILE), with one line of log.

    Every value is kept as it is, the stock defaults included: the fields that SmileTrainingArguments declares unset
    (`learning_rate`, `optim`...: [`smile_hf.config.NOT_SET_FIELDS`]) receive the plain arguments' values, so no recipe
    fills them, and the fields whose SmileTrainingArguments default differs (`remove_unused_columns`,
    `label_names`...) keep the plain arguments' values too; the log line names the latter, which is then a warning.
    """
    if isinstance(args, SmileTrainingArguments):
        return args
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"`args` must be SmileTrainingArguments or TrainingArguments, got {type(args).__name__}.")
    ours = {f.name for f in fields(SmileTrainingArguments)}
    foreign = [f.name for f in fields(args) if f.init and f.name not in ours]
    if foreign:  # another library's arguments: their own fields would be silently dropped
        raise TypeError(
            f"{type(args).__name__} has fields SmileTrainingArguments lacks ({', '.join(foreign)}): pass "
            "SmileTrainingArguments, or a plain TrainingArguments."
        )
    converted = SmileTrainingArguments(**{f.name: getattr(args, f.name) for f in fields(args) if f.init})
    changed = {
        name: getattr(converted, name)
        for name, default in _changed_defaults(SmileTrainingArguments).items()
        if getattr(converted, name) != default
    }
    if changed:
        kept = ", ".join(f"{name}={value!r}" for name, value in changed.items())
        logger.warning(
            f"Converted {type(args).__name__} to SmileTrainingArguments (method '{converted.method}'), keeping every "
            f"value, among them {kept}, where SmileTrainingArguments' defaults differ: pass SmileTrainingArguments "
            "to get those."
        )
    else:
        logger.info(
            f"Converted {type(args).__name__} to SmileTrainingArguments (method '{converted.method}'), keeping every "
            "value."
        )
    return converted


def _changed_defaults(arguments_class: type) -> dict[str, Any]:
    """The stock fields to which `arguments_class` gives another default than `TrainingArguments`, with that default
    (not the fields redeclared unset, `None`, whose value comes from the stock default or a recipe)."""
    defaults, stock = {}, {f.name: f for f in fields(TrainingArguments)}
    for f in fields(arguments_class):
        if f.name not in stock:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        theirs = stock[f.name]
        stock_default = theirs.default_factory() if theirs.default_factory is not MISSING else theirs.default
        if default is not None and default != stock_default:
            defaults[f.name] = default
    return defaults


class EvaluationTerms:
    """The loss terms of one evaluation: per term, the sum over the evaluated examples of the batch means, and the
    number of examples, both gathered over the processes as the Trainer gathers `eval_loss` (`gather_for_metrics`,
    which drops the examples repeated to fill the last batch), so that each mean weighs the examples alike and
    `eval_loss_main` equals `eval_loss`."""

    def __init__(self):
        self.sums: torch.Tensor | None = None
        self.names: list[str] = []
        self.count = 0

    def add(self, terms: dict[str, torch.Tensor], batch_size: int, gather) -> None:
        """Record the terms (batch means) of a batch of `batch_size` examples; `gather` is the Trainer's
        `gather_function`."""
        if not self.names:
            self.names = list(terms)
        rows = gather(torch.stack([terms[name] for name in self.names]).repeat(batch_size, 1))
        self.sums = rows.sum(0) if self.sums is None else self.sums + rows.sum(0)
        self.count += rows.shape[0]

    def means(self) -> dict[str, float]:
        """Term name -> mean over the evaluated examples (empty when no batch was recorded)."""
        if self.sums is None or not self.count:
            return {}
        return dict(zip(self.names, (self.sums / self.count).tolist()))


class SmileTrainer(
    UnlabeledStreamMixin, ShardedMethodStateMixin, MethodStateMixin, CompleteCheckpointMixin, Trainer
):
    """Trainer for transfer learning of image classifiers with SMILE and its baselines.

    Its arguments are those of `transformers.Trainer.__init__`, in the same order, then `teacher_model` and
    `peft_config` (what each stock argument means here: [`smile_hf.parity.TRAINER_ARGUMENTS`]).

    Args:
        model (`PreTrainedModel` or `str`, *optional*): the student, a pre-trained `AutoModelForImageClassification`
            whose head has been replaced for the target classes (see [`load_student`]), or an
            `AutoModelForSequenceClassification` (text: see [`smile_hf.modeling.load_text_student`] and the text
            classification page); or the name or path of a
            pre-trained checkpoint, loaded with a new head (`args.model_init_kwargs` are passed to `from_pretrained`;
            the number and names of the classes come from the training set's `ClassLabel` column or from those
            kwargs); or None with `model_init` (the stock `Trainer`'s form for `hyperparameter_search`: every
            `train()` makes a new model, and its source head, teacher, EMA state and method state are built again).
        args ([`SmileTrainingArguments`] or `TrainingArguments`, *optional*): the training arguments, the method and
            its hyperparameters. A plain `TrainingArguments` is converted to `SmileTrainingArguments` keeping every
            value it holds (the method is then SMILE with its defaults), with a one-line log. Defaults to SMILE with
            every default, writing to `<model name>-smile`.
        data_collator (`DataCollator`, *optional*): defaults to [`smile_hf.data.collate`] (stacks `pixel_values` and
            `labels`); for a text model, to `DataCollatorWithPadding(processing_class)`.
        train_dataset (`Dataset`, *optional*): the training images (`pixel_values`) and hard labels (`labels`).
        eval_dataset (`Dataset` or `dict[str, Dataset]`, *optional*): the evaluation set(s); evaluation logs the
            loss terms of the method as `eval_loss_<term>` (see [`~SmileTrainer.evaluate`]).
        processing_class (`BaseImageProcessor`, *optional*): the image processor saved with the model. Defaults to
            the one of the evaluation transform when `eval_dataset` has one attached by `smile_hf.data.set_transforms`
            ([`smile_hf.data.evaluation_processor`]), else the checkpoint's (a text model: the checkpoint's tokenizer).
        model_init (`Callable[[], PreTrainedModel]`, *optional*): makes a new student for each `train()` (with
            `model=None`), as in the stock `Trainer`.
        compute_loss_func (`Callable`, *optional*): replaces the target cross-entropy `L_main`, in training and in
            evaluation ([`smile_hf.target.TargetLoss`]); the method's own terms are unchanged.
        compute_metrics (`Callable[[EvalPrediction], dict]` or an `evaluate` module, *optional*): the evaluation
            metrics; an `evaluate` module is computed through [`smile_hf.metrics.as_compute_metrics`].
        callbacks (`list[TrainerCallback]`, *optional*): added to the stock ones and to those of the method.
        optimizers (`tuple[Optimizer | None, LambdaLR | None]`, *optional*, defaults to `(None, None)`): a user's
            optimizer and scheduler, as in the stock `Trainer` (the optimizer must hold every trainable parameter,
            those SmileTrainer attaches included).
        optimizer_cls_and_kwargs (`tuple[type[Optimizer], dict]`, *optional*): the optimizer class and its
            arguments, built over every trainable parameter.
        preprocess_logits_for_metrics (`Callable[[Tensor, Tensor], Tensor]`, *optional*): as in the stock `Trainer`.
        teacher_model (`PreTrainedModel` or `str`, *optional*): the source model (the same pre-trained checkpoint,
            with its original head) for the methods whose regulariser needs it (`needs_source_model`). Defaults to
            loading the student's `name_or_path` again.
        peft_config (`peft.LoraConfig`, *optional*): train LoRA adapters instead of the whole model (TRL's
            convention); the new head is added to `modules_to_save`. A `model` that is already a `PeftModel` is
            trained as it is. The teacher is then an adapter on the shared frozen base ([`LoraEmaTeacher`]).
        unlabeled_dataset (`Dataset`, *optional*): unlabelled images of the target domain (`pixel_values` only; no
            label is ever read), for the methods that use them (`unlabeled_views`: SMILE adds `L_aux` and `L_reg`
            on them, FixMatch its pseudo-label term); any other method refuses it. Each micro-batch draws
            `unlabeled_batch_ratio x per_device_train_batch_size` of them ([`smile_hf.unlabeled.UnlabeledStream`]:
            sharded over the processes, determined by the step, so resuming is exact).
    """

    _tag_names = ["smile_hf", "image-classification", "transfer-learning"]
    _paper = {
        "title": "SMILE: Self-Distilled MIxup for Efficient Transfer LEarning",
        "id": "2103.13941",
        "citation": (
            "@article{li2021smile,\n  title={{SMILE: Self-Distilled MIxup for Efficient Transfer LEarning}},\n"
            "  author={Li, Xingjian and Xiong, Haoyi and Xu, Chengzhong and Dou, Dejing},\n"
            "  journal={arXiv preprint arXiv:2103.13941},\n  year={2021}\n}"
        ),
    }

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str | None = None,
        args: SmileTrainingArguments | TrainingArguments | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | datasets.Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | datasets.Dataset | None = None,
        processing_class: BaseImageProcessor | FeatureExtractionMixin | ProcessorMixin | None = None,
        model_init: Callable[..., PreTrainedModel] | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | Any | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        teacher_model: PreTrainedModel | nn.Module | str | None = None,
        peft_config: PeftConfig | None = None,
        unlabeled_dataset: Dataset | datasets.Dataset | None = None,
    ):
        if args is None:
            name = model if isinstance(model, str) else getattr(model, "name_or_path", "") or "model"
            args = SmileTrainingArguments(output_dir=f"{os.path.basename(os.path.normpath(name))}-smile")
        args = as_smile_training_arguments(args)
        check_sharding(args)
        check_trainer_arguments(
            model, args, {"model_init": model_init, "optimizers": optimizers, "compute_loss_func": compute_loss_func}
        )
        init_kwargs = dict(args.model_init_kwargs or {})
        self._peft_config, self._teacher_model = peft_config, keep_pristine(teacher_model, model_init)
        self.model_init = model_init
        seed_everything(args)  # as the stock Trainer's __init__ does, before the new head of a model loaded here is drawn
        if model is None:  # the stock Trainer's form for `hyperparameter_search`: the model comes from model_init
            model = self.call_model_init()
        if isinstance(model, str):
            model = load_student_with_classes_of(model, train_dataset, init_kwargs)
        model = wrap_student(model, peft_config)
        source_model = self._attach_model_parts(model, args)
        eval_sets = eval_dataset if isinstance(eval_dataset, dict) else {"evaluation": eval_dataset}
        if text := is_text_classifier(unwrap_model(model)):  # the model's and the card's tags
            self._tag_names = list(library_tags("text"))
        if unlabeled_dataset is not None and text:
            raise ValueError("`unlabeled_dataset` holds images; a text classifier trains without it: leave it unset.")
        if self.regularizer.requires_unlabeled and text:
            raise ValueError(f"Method '{args.method}' trains on unlabelled images, which a text classifier cannot use.")
        check_unlabeled(self.regularizer, args, unlabeled_dataset)
        datasets = {"training": train_dataset, "unlabelled": unlabeled_dataset, **eval_sets}
        fit_datasets_to_model(model, datasets)  # images to the model's channels
        if compute_metrics is not None:  # an `evaluate` module computes through ClassificationMetrics
            compute_metrics = as_compute_metrics(compute_metrics)
        if processing_class is None:  # what evaluates the model (smile_hf.data's eval transform), else the checkpoint's
            processing_class = evaluation_processor(eval_dataset) or load_processor(self.adapter)(
                getattr(model, "name_or_path", None), **init_kwargs
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=default_collator(self.adapter, processing_class) if data_collator is None else data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,  # model_init: kept by SmileTrainer (the model is already made)
            compute_loss_func=compute_loss_func,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self.model_init = model_init
        declare_unscaled_loss(self)  # compute_loss returns a per-batch mean: the Trainer divides by the accumulation
        check_sharding(args, self)
        check_model_supports_activation_checkpointing(args, self.model, peft=peft_model_of(self.model) is not None)
        check_optimizer_covers(self.optimizer, self.model)
        check_no_user_optimizer(self.optimizer, args)  # per-group learning rates need the optimizer built here
        self.add_callback(TransformEpochCallback(self.train_dataset))  # per-example augmentation follows the epoch
        self.add_callback(InterruptCallback())  # a Ctrl-C / SIGTERM whose first KeyboardInterrupt was lost
        if args.world_size > 1:  # BatchNorm statistics: the same on every rank for evaluation, saving and the EMA
            add_buffer_sync(self)
        self._eval_terms: EvaluationTerms | None = None  # the loss terms of the evaluation running, if recorded
        self.unlabeled_dataset, self.unlabeled_source = unlabeled_dataset, None  # the source: said by the run script
        self._build_training_parts(source_model)

    # ---- models -----------------------------------------------------------------------------------------------

    def _attach_model_parts(self, model: nn.Module, args: SmileTrainingArguments) -> nn.Module | None:
        """The method, the adapter of `model` and (for the methods that need them) the source model and the source
        head attached to `model`. Returns the source model."""
        self.regularizer = build_regularizer(args)
        self.adapter = BackboneAdapter(model)
        load_kwargs = select_loading_kwargs(dict(args.model_init_kwargs or {}))
        source_model = self._source_model(model, fresh_copy(self._teacher_model, self.model_init), load_kwargs)
        if self.regularizer.needs_source_head and not hasattr(unwrap_model(model), SOURCE_HEAD_NAME):
            if check_source_head(self.regularizer, source_model):
                attach_source_head(unwrap_model(model), build_source_head_copy(self.adapter, source_model))
        return source_model

    def _build_training_parts(self, source_model: nn.Module | None) -> None:
        """What training builds around the student: teacher, loss, guard and their callbacks (built again, the old
        callbacks removed, for each model `model_init` makes)."""
        args, before = self.args, list(self.callback_handler.callbacks)
        for callback in getattr(self, "_model_callbacks", ()):
            self.remove_callback(callback)
        self.teacher = self._build_teacher(source_model) if self.regularizer.needs_teacher else None
        if args.torch_compile and self.teacher is not None:  # the Trainer compiles the student only
            self.teacher.compile_model(backend=args.torch_compile_backend, mode=args.torch_compile_mode)
        if args.channels_last:
            for module in (self.model, self.teacher):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self.loss_fn = TransferLoss.from_args(self.regularizer, self.adapter, self.teacher, args, self.compute_loss_func)
        self.guard = NonFiniteGuard(args.nan_policy, args.max_consecutive_skips)
        self.add_callback(NonFiniteGuardCallback(self.guard))
        self.add_callback(RegularizerCallback(self.regularizer, self.regularizer_context))
        for callback in self.regularizer.callbacks(self):
            self.add_callback(callback)
        self._model_callbacks = [c for c in self.callback_handler.callbacks if c not in before]
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)  # training loss terms since the last log
        self._micro_position = (-1, 0)
        self._method_ready = False
        self.calibration: CalibrationResult | None = None  # set by `calibrate`

    def call_model_init(self, trial=None) -> nn.Module:
        """`Trainer.call_model_init`, the new model wrapped for LoRA (`peft_config`) as in `__init__`."""
        return wrap_student(super().call_model_init(trial), self._peft_config)

    def _hp_search_setup(self, trial) -> None:
        """`Trainer._hp_search_setup` (the trial's values into `args`), then, when `train` has just made a new model
        with `model_init`, the method, source head, teacher, EMA state and loss built again for it, with those values
        (checked as at construction)."""
        super()._hp_search_setup(trial)
        if self.model_init is None:
            return
        check_trial_arguments(self.args)
        check_activation_checkpointing(self.args)  # a trial may have set the method (manifold mixup)
        check_model_supports_activation_checkpointing(self.args, self.model, peft_model_of(self.model) is not None)
        source_model = self._attach_model_parts(self.model, self.args)
        if self.place_model_on_device:  # the new source head
            self._move_model_to_device(self.model, self.args.device)
        self._build_training_parts(source_model)
        self.regularizer.setup(self.regularizer_context())
        self._method_ready = True

    def _source_model(self, model: nn.Module, teacher_model, load_kwargs: dict) -> nn.Module | None:
        """The pre-trained model with its original head, when the method needs it ([`resolve_source_model`])."""
        if not self.regularizer.needs_source_model:
            return None
        return resolve_source_model(self.regularizer.name, self.adapter, model, teacher_model, load_kwargs)

    def _build_teacher(self, source_model: nn.Module) -> Teacher:
        """The teacher of the student ([`smile_hf.lora.build_teacher`]), on the training device, with its EMA callback
        when the method's teacher follows the student."""
        args, ema = self.args, self.regularizer.ema_teacher
        if is_fsdp2(self):  # sharded like the student, in float32, its EMA on the local shards (smile_hf.fsdp)
            source_model = prepare_teacher_model(self.accelerator, source_model)
        teacher = build_teacher(
            self.model, self.adapter, source_model, decay=args.ema_decay if ema else 1.0,
            update_every=args.ema_update_every, include_buffers=args.ema_buffers,
            autocast=lambda: self.accelerator.autocast(),  # the student's mixed precision (accelerate's)
            fold_batchnorm=args.teacher_fold_batchnorm, forward_dtype=torch.bfloat16 if args.teacher_bf16 else None,
            forward_channels_last=args.teacher_channels_last,
        ).to(args.device)  # fmt: skip
        if ema:
            self.add_callback(EmaTeacherCallback(teacher, self.in_final_phase))
        return teacher

    def regularizer_context(self) -> RegularizerContext:
        """What the regulariser's one-off work reads: the unwrapped student, the adapter, the teacher, the training
        dataloader, the accelerator's reduce and gather, the device, the seed, and whether bars are shown."""
        return RegularizerContext(
            model=unwrap_model(self.model), adapter=self.adapter, batches=self.get_train_dataloader,
            device=self.args.device, teacher=self.teacher, reduce=self.accelerator.reduce,
            gather=self.accelerator.gather, seed=self.args.seed,
            show_progress=not self.args.disable_tqdm and self.is_local_process_zero(),
        )  # fmt: skip

    # ---- schedule ---------------------------------------------------------------------------------------------

    @property
    def final_phase_start(self) -> int:
        """First (0-based) step of the final plain fine-tuning phase."""
        max_steps = self.state.max_steps
        return max_steps - int(round(max_steps * self.args.final_finetune_fraction))

    def in_final_phase(self, step: int) -> bool:
        """Whether 0-based step `step` is trained with plain fine-tuning (no mixing, teacher or EMA)."""
        return self.regularizer.has_final_phase and self.state.max_steps > 0 and step >= self.final_phase_start

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; with `backbone_lr_multiplier` != 1 or `layer_decay`, one parameter group per
        learning-rate scale and weight decay ([`smile_hf.param_groups`])."""
        if self.optimizer is not None or not uses_lr_groups(self.args):
            return super().create_optimizer(model)
        model = self.model if model is None else model
        optimizer_cls, kwargs = self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, model)
        decay_names = self.get_decay_parameter_names(model)
        self.optimizer = build_grouped_optimizer(model, self.adapter, self.args, optimizer_cls, kwargs, decay_names)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The Trainer's schedule (or the user's, from `optimizers`), or with `lr_step_fraction` the reference's
        step decay after the stock warm-up ([`step_decay_schedule`])."""
        if self.args.lr_step_fraction is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        self.lr_scheduler = step_decay_schedule(
            optimizer or self.optimizer, num_training_steps, warmup, self.args.lr_step_fraction, self.args.lr_step_gamma
        )
        mark_scheduler_created(self)
        return self.lr_scheduler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, resuming only from complete checkpoints ([`CompleteCheckpointMixin`]).

        The regulariser's one-off `setup` runs first (before a checkpoint's state is restored); the student and the
        method state (teacher, auxiliary head, regulariser state) are restored from the checkpoint.
        """
        check_resume(self, resume_from_checkpoint)
        if not self._method_ready and self.model_init is None:  # with model_init: for the new model, in train
            self.regularizer.setup(self.regularizer_context())
            self._method_ready = True
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        self.guard.raise_if_diverged(self.state.global_step)
        return output

    def floating_point_ops(self, inputs: dict) -> int:
        """The stock estimate behind `total_flos` (6 x input elements x parameters), with the parameter count taken
        once per model instead of walking every parameter at every step (a few % of a small model's step)."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        cached = getattr(self, "_num_parameters_cache", None)
        if cached is None or cached[0] is not self.model:
            cached = self._num_parameters_cache = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[main_input].numel() * cached[1]

    # ---- loss -------------------------------------------------------------------------------------------------

    def _next_micro_step(self) -> int:
        step, micro = self._micro_position
        micro = micro + 1 if step == self.state.global_step else 0
        self._micro_position = (self.state.global_step, micro)
        return micro

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: [`TransferLoss`] of the batch under this micro-batch's mix, each term recorded for logging; a
        per-batch mean, which the Trainer divides by the gradient accumulation steps (`loss_is_scaled_for_ga` is
        False). Evaluation: the stock loss (cross-entropy, label-smoothed with `label_smoothing_factor`), or the
        user's `compute_loss_func` ([`TargetLoss`]); within [`~SmileTrainer.evaluate`], the method's terms of the
        batch are recorded as well."""
        if not model.training:
            pixel_values, labels = self.adapter.model_inputs(inputs), inputs["labels"]  # (the stock loss pops labels)
            images = isinstance(pixel_values, torch.Tensor)  # else a text model's inputs
            read = self._eval_terms is not None and images and self._reads_evaluation_student()
            with self.loss_fn.reading_student(model) if read else nullcontext() as capture:
                if self.compute_loss_func is None:  # the stock loss (label-smoothed with `label_smoothing_factor`)
                    loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
                else:
                    outputs = model(**self.adapter.model_kwargs(pixel_values))
                    loss = self.loss_fn.target_loss(outputs.logits, labels, None)
            if self._eval_terms is not None:
                student = self.adapter.forward_output(capture, outputs, tuple(pixel_values.shape[-2:])) if read else None
                terms = self._evaluation_terms(model, pixel_values, labels, loss, student)
                self._eval_terms.add(terms, len(labels), self.gather_function)
            return (loss, outputs) if return_outputs else loss
        step, pixel_values = self.state.global_step, self.adapter.model_inputs(inputs)
        final_phase = self.in_final_phase(step)
        micro_step = None if final_phase else self._next_micro_step()
        mix = None if final_phase else self.loss_fn.draw_mix(pixel_values, model, step, micro_step)
        output = self.loss_fn(model, pixel_values, inputs["labels"], mix, final_phase=final_phase)
        if self.unlabeled_dataset is not None and not final_phase:
            self.add_unlabeled_terms(output, model, pixel_values, step, micro_step)
        self._record_terms(output)
        return (output.loss, {"logits": output.student.logits}) if return_outputs else output.loss

    def _has_own_terms(self) -> bool:
        return type(self.regularizer).loss_terms is not Regularizer.loss_terms

    def _reads_evaluation_student(self) -> bool:
        """Whether the method's evaluation terms read the student's features from the stock evaluation forward pass
        (no second forward pass of the student): for a method with terms of its own, unless `channels_last` (the
        loss would run the student on channels-last images, rounding differently)."""
        return self._has_own_terms() and not self.loss_fn.channels_last

    def _evaluation_terms(
        self,
        model: nn.Module,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        loss: torch.Tensor,
        student: ForwardOutput | None = None,
    ) -> dict[str, torch.Tensor]:
        """The unweighted loss terms of an evaluation batch, named as in training: `main` is the evaluation loss
        itself (`L_main` of the unmixed batch), the method's own terms come from [`TransferLoss`] on the unmixed
        batch outside the final phase: the teacher's forward pass, and the student's output of the evaluation's own
        forward pass (`student`; without it, one more forward pass of the student)."""
        terms = {"main": loss.detach().float()}
        if self._has_own_terms():  # a regulariser with terms of its own
            output = self.loss_fn(model, pixel_values, labels, None, student=student)
            terms.update({name: value.detach().float() for name, (_, value) in output.terms.items() if name != "main"})
        return terms

    # ---- evaluation -------------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"):
        """`Trainer.evaluate`, whose metrics (logged and returned) also hold the mean over the evaluated examples of
        every loss term of the method, unweighted, as in training: `eval_loss_main`, `eval_loss_aux`,
        `eval_loss_reg`... (`<metric_key_prefix>_loss_<term>`, so `eval_<name>_loss_<term>` for each set of a dict
        `eval_dataset`). They are computed on the unmixed evaluation batches, with the teacher as it is, once the
        regulariser's one-off work has run (training has begun): an evaluation before `train()` logs none of them.
        `args.eval_loss_terms=False` leaves them out (and their cost: one forward pass of the teacher per batch; the
        student's features are read from the evaluation's own forward pass)."""
        record = self._method_ready and self.args.eval_loss_terms
        outer, self._eval_terms = self._eval_terms, EvaluationTerms() if record else None
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._eval_terms = outer

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ):
        """`Trainer.evaluation_loop`, with the loss terms recorded by [`~SmileTrainer.evaluate`] added to its
        metrics."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._eval_terms is not None:
            means = self._eval_terms.means()
            output.metrics.update({f"{metric_key_prefix}_loss_{name}": value for name, value in means.items()})
            self._eval_terms = EvaluationTerms()
        return output

    # ---- logging ----------------------------------------------------------------------------------------------

    def _record_terms(self, output: LossOutput) -> None:
        """Keep the step's loss terms (`loss_<name>`), the method's statistics and the mix's lambda for the next log."""
        metrics, values = self._metrics, {name: value.detach().float() for name, (_, value) in output.terms.items()}
        self.guard.record(values)
        for name, value in values.items():
            metrics[f"loss_{name}"].append(value)
        for name, value in output.statistics.items():
            metrics[name].append(value.detach().float())
        if self.args.mixing is not None:
            metrics["mix_lambda"].append(torch.tensor(output.mix.lam if output.mix is not None else 1.0))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds to training logs the mean of each recorded loss term (averaged over processes) since the last log."""
        if self.model.training:
            self.guard.raise_if_diverged(self.state.global_step)
            for key, values in sorted(self._metrics.items()):
                mean = torch.stack(values).mean().to(self.args.device)
                logs[key] = self.accelerator.reduce(mean, reduction="mean").item()
            self._metrics.clear()
        super().log(logs, start_time)

    def calibrate(self, dataset) -> CalibrationResult:
        """Temperature scaling: fit one temperature on `dataset` (a validation split, neither the training nor the
        evaluation set), fold it into the model's head(s) and record it ([`smile_hf.calibration.calibrate_trainer`])."""
        self.calibration = calibrate_trainer(self, dataset)
        return self.calibration

    # ---- saving -----------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`: the student as a plain checkpoint of its class, loadable by
        `AutoModelForImageClassification` and `pipeline("image-classification")` (the attached training-only heads
        are left out through `_keys_to_ignore_on_save`). Placeholder `id2label` names are replaced by the class
        names of the training set (a `ClassLabel` column), and the training arguments are also written as JSON
        (`training_args.json`). smile_hf never loads the Trainer's pickled `training_args.bin` (nor does the
        Trainer). A model whose weights are not finite is never saved ([`NonFiniteWeightsError`]).

        A LoRA student is saved as its adapter alone, with its trained head and the image processor (the teacher
        adapter, which checkpoints keep in `method_state.safetensors`, is left out); `push_to_hub` uploads that.
        For the adapter merged into the base, call [`smile_hf.lora.save_merged`]. Under FSDP2 the shards are gathered
        into one full model ([`smile_hf.fsdp.save_full_model`]), without the teacher."""
        self.guard.raise_if_diverged(self.state.global_step)
        if not _internal_call:  # calibration='temperature' is honoured or refused, never silently skipped
            check_calibrated(self)
        if not is_fsdp2(self):  # under FSDP2, the gathered weights are checked (save_full_model)
            check_finite_weights(unwrap_model(self.model), output_dir or self.args.output_dir)
        config = getattr(unwrap_model(self.model), "config", None)
        filled = config is not None and fill_label_names(config, label_names_from_dataset(self.train_dataset))
        if filled and self.is_world_process_zero():  # every process names the classes; one says so
            logger.info("Saving the class names of the training set as `id2label` / `label2id`.")
        if is_fsdp2(self) and not self.saving_checkpoint:  # one full model, gathered from the shards
            save_full_model(self, output_dir or self.args.output_dir)
            if self.args.push_to_hub and not _internal_call:  # as the stock save_model
                self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        elif peft_model_of(self.model) is None:
            super().save_model(output_dir, _internal_call)
        else:  # the adapter alone: the stock save would add the teacher's (checkpoints keep it in the method state)
            if self.args.should_save:
                save_adapter(self, output_dir or self.args.output_dir, warn=not self.saving_checkpoint)
            if self.args.push_to_hub and not _internal_call:  # as the stock save_model
                self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        with open(os.path.join(output_dir, TRAINING_ARGS_JSON_NAME), "w", encoding="utf-8") as f:
            f.write(self.args.to_json_string())
        if self.processing_class is None and not _internal_call:
            logger.warning(missing_processor_message(self.adapter, output_dir))

    # ---- model card / Hub -------------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        template_path: str | None = None,
        **dataset_details,
    ) -> None:
        """Write the model card, `README.md` in `output_dir`: the method and its hyperparameters, the evaluation
        results (also as `model-index` metadata), the loss terms, intended use and limitations, the SMILE citation
        (see [`smile_hf.model_card.model_card_from_trainer`]). Called by `push_to_hub`; never uses the network.

        Args: those of `Trainer.create_model_card` (`finetuned_from` is the base model, `dataset_tags` the dataset's
        Hub id, `dataset` its name, `dataset_args` its configuration), `template_path` for another template, and
        `dataset_details` (`dataset_split`, `dataset_revision`, `dataset_split_role`, `local_dataset`).
        """
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        onnx = None  # the ONNX section of an existing card, kept while its files are there
        if os.path.isfile(path):  # keep the tags of an existing card, as the stock Trainer does
            with open(path, encoding="utf-8") as f:
                onnx = kept_onnx_section(f.read(), self.args.output_dir)
            try:
                tags += [t for t in (ModelCard.load(path).data.tags or []) if t not in tags]
            except Exception as error:  # an unreadable card is replaced
                logger.warning(f"Replacing the model card {path}, which cannot be parsed ({error}).")
        model = unwrap_model(self.model)
        card = model_card_from_trainer(
            self,
            model=model,
            method_title=method_title(self.args.method),
            method_description=self.regularizer.description,
            method_hyperparameters=method_hyperparameters(self.args),
            method_paper=self.regularizer.paper or None,
            citation=self._paper["citation"],
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            finetuned_from=finetuned_from,
            tasks=tasks,
            dataset_tags=dataset_tags,
            dataset=dataset,
            dataset_args=dataset_args,
            template_path=template_path,
            modality="text" if is_text_classifier(model) else "image",
            unlabeled_images=describe_unlabeled(unlabeled_record(self)),
            **dataset_details,
        )
        if onnx is not None:  # the folder's ONNX exports (smile-hf export) stay in its card
            card.text = replace_card_section(card.text, ONNX_CARD_SECTION, onnx)
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(path)
