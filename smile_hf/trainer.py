# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""[`SmileTrainer`]: a `transformers.Trainer` whose `compute_loss` adds mixing and the loss terms of a transfer
learning method (SMILE by default) to the fine-tuning of any supported `AutoModelForImageClassification`.

The trainer only wires the pieces together: the loss of a micro-batch is [`TransferLoss`], the teacher
[`EmaTeacher`], the method's terms a [`TransferMethod`], the checkpoint protocol [`CompleteCheckpointMixin`] and the
model card [`smile_hf.model_card`].
"""

from __future__ import annotations

import os
from collections import defaultdict

import safetensors.torch
import torch
from huggingface_hub import ModelCard
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel, Trainer
from transformers.utils import logging

from ._compat import mark_scheduler_created
from .backbones import SOURCE_HEAD_NAME, BackboneAdapter, build_source_head_copy, unwrap_model
from .checkpoints import CompleteCheckpointMixin
from .config import SmileTrainingArguments
from .data import TransformEpochCallback, collate
from .distributed import add_buffer_sync
from .guard import NonFiniteGuard, NonFiniteGuardCallback, check_finite_weights
from .lora import (
    LoraEmaTeacher,
    base_buffers,
    check_base_is_source,
    load_base_buffers,
    peft_model_of,
    save_adapter,
    wrap_student,
)
from .loss import TransferLoss
from .methods import build_method, method_hyperparameters, method_title, parse_method
from .methods.base import PrepareCallback
from .metrics import as_compute_metrics
from .mixing import Mix
from .model_card import model_card_from_trainer
from .modeling import (
    attach_source_head,
    check_teacher_matches,
    fill_label_names,
    label_names_from_dataset,
    load_image_processor,
    load_source_model,
    load_student_with_classes_of,
    loading_kwargs,
)
from .sharding import check_resume, check_sharding
from .teacher import EmaTeacher, EmaTeacherCallback, Teacher

logger = logging.get_logger(__name__)

SMILE_STATE_NAME = "smile_state.safetensors"
"""File, in each Trainer checkpoint, holding the state the stock Trainer does not know about."""
TRAINING_ARGS_JSON_NAME = "training_args.json"
"""The training arguments saved with the model as JSON, readable without unpickling the Trainer's
`training_args.bin`."""


class SmileTrainer(CompleteCheckpointMixin, Trainer):
    """Trainer for transfer learning of image classifiers with SMILE and its baselines.

    Args:
        model (`PreTrainedModel` or `str`): the student, a pre-trained `AutoModelForImageClassification` whose head
            has been replaced for the target classes (see [`load_student`]); or the name or path of a pre-trained
            checkpoint, loaded with a new head (`args.model_init_kwargs` are passed to `from_pretrained`; the number
            and names of the classes come from the training set's `ClassLabel` column or from those kwargs).
        args (`SmileTrainingArguments`, *optional*): the training arguments, the method and its hyperparameters.
            Defaults to SMILE with every default, writing to `<model name>-smile`.
        teacher_model (`PreTrainedModel` or `str`, *optional*): the source model (the same pre-trained checkpoint,
            with its original head) for the methods that need one (`method.needs_source_model`). Defaults to loading
            the student's `name_or_path` again.
        data_collator (*optional*): defaults to [`smile_hf.data.collate`] (stacks `pixel_values` and `labels`).
        processing_class (*optional*): the image processor saved with the model. Defaults to the checkpoint's.
        peft_config (`peft.LoraConfig`, *optional*): train LoRA adapters instead of the whole model (TRL's
            convention); the new head is added to `modules_to_save`. A `model` that is already a `PeftModel` is
            trained as it is. The teacher is then an adapter on the shared frozen base ([`LoraEmaTeacher`]).
        **kwargs: every other `Trainer` argument (`train_dataset`, `eval_dataset`, `compute_metrics`,
            `callbacks`...).
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
        model: PreTrainedModel | str,
        args: SmileTrainingArguments | None = None,
        teacher_model: PreTrainedModel | str | None = None,
        data_collator=None,
        train_dataset=None,
        processing_class=None,
        peft_config=None,
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else getattr(model, "name_or_path", "") or "model"
            args = SmileTrainingArguments(output_dir=f"{os.path.basename(os.path.normpath(name))}-smile")
        if not isinstance(args, SmileTrainingArguments):
            raise TypeError(f"SmileTrainer needs SmileTrainingArguments, got {type(args).__name__}.")
        check_sharding(args)
        self.method = build_method(args)
        init_kwargs = dict(args.model_init_kwargs or {})
        if isinstance(model, str):
            model = load_student_with_classes_of(model, train_dataset, init_kwargs)
        model = wrap_student(model, peft_config)
        self.adapter = BackboneAdapter(model)
        source_model = self._source_model(model, teacher_model, loading_kwargs(init_kwargs))
        if self.method.needs_source_head and not hasattr(model, SOURCE_HEAD_NAME):
            attach_source_head(unwrap_model(model), build_source_head_copy(self.adapter, source_model))
        if "compute_metrics" in kwargs:  # an `evaluate` module computes through ClassificationMetrics
            kwargs["compute_metrics"] = as_compute_metrics(kwargs["compute_metrics"])
        if processing_class is None:
            processing_class = load_image_processor(getattr(model, "name_or_path", None), **init_kwargs)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator if data_collator is not None else collate,
            train_dataset=train_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # compute_loss returns a per-batch mean: the Trainer divides it by the gradient accumulation steps.
        self.model_accepts_loss_kwargs = False
        check_sharding(args, self)
        self.teacher = self._build_teacher(source_model) if self.method.needs_teacher else None
        if args.torch_compile and self.teacher is not None:  # the Trainer compiles the student only
            self.teacher.compile_model(backend=args.torch_compile_backend, mode=args.torch_compile_mode)
        if args.channels_last:
            for module in (self.model, self.teacher):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self.loss_fn = TransferLoss.from_args(self.method, self.adapter, self.teacher, args)
        self.guard = NonFiniteGuard(args.nan_policy, args.max_consecutive_skips)
        self.add_callback(NonFiniteGuardCallback(self.guard))
        self.add_callback(TransformEpochCallback(self.train_dataset))  # per-example augmentation follows the epoch
        self.add_callback(PrepareCallback(self.method, self))
        for callback in self.method.callbacks(self):
            self.add_callback(callback)
        if args.world_size > 1:  # BatchNorm statistics: the same on every rank for evaluation, saving and the EMA
            add_buffer_sync(self)
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)  # training loss terms since the last log
        self._micro_position = (-1, 0)
        self._method_ready = False

    # ---- models -----------------------------------------------------------------------------------------------

    def _source_model(self, model: nn.Module, teacher_model, load_kwargs: dict) -> nn.Module | None:
        """The pre-trained model with its original head, when the method needs it."""
        if not self.method.needs_source_model:
            return None
        if teacher_model is None:
            teacher_model = getattr(model, "name_or_path", "")
            if not teacher_model:
                raise ValueError(
                    f"Method '{self.method.name}' needs the pre-trained source model (with its original head), but "
                    "the student was not loaded from a checkpoint: pass `teacher_model=`."
                )
        if isinstance(teacher_model, str):
            teacher_model = load_source_model(teacher_model, **load_kwargs)
        check = check_base_is_source if peft_model_of(model) is not None else check_teacher_matches
        check(self.adapter, model, teacher_model)
        return teacher_model

    def _build_teacher(self, source_model: nn.Module) -> Teacher:
        """The teacher: a full copy of the source model ([`EmaTeacher`]) or, for a LoRA student, an adapter on the
        student's frozen base with a copy of the source head ([`LoraEmaTeacher`])."""
        args = self.args
        options = {
            "decay": args.ema_decay if self.method.ema_teacher else 1.0,
            "update_every": args.ema_update_every,
            "include_buffers": args.ema_buffers,
            "autocast": lambda: self.accelerator.autocast(),  # the student's mixed precision (accelerate's)
        }
        if peft_model_of(self.model) is not None:
            teacher = LoraEmaTeacher(self.model, self.adapter, self.adapter.head(source_model), **options)
        else:
            teacher = EmaTeacher(source_model, self.adapter, **options)
        teacher = teacher.to(args.device)
        if self.method.ema_teacher:
            self.add_callback(EmaTeacherCallback(teacher, self.in_final_phase))
        return teacher

    # ---- schedule ---------------------------------------------------------------------------------------------

    @property
    def final_phase_start(self) -> int:
        """First (0-based) step of the final plain fine-tuning phase."""
        max_steps = self.state.max_steps
        return max_steps - int(round(max_steps * self.args.final_finetune_fraction))

    def in_final_phase(self, step: int) -> bool:
        """Whether 0-based step `step` is trained with plain fine-tuning (no mixing, teacher or EMA)."""
        return self.method.has_final_phase and self.state.max_steps > 0 and step >= self.final_phase_start

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The Trainer's schedule, or with `lr_step_fraction` a constant lr (after warm-up) multiplied once by
        `lr_step_gamma` at that fraction of training."""
        if self.args.lr_step_fraction is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        milestone = int(self.args.lr_step_fraction * num_training_steps)
        warmup = self.args.get_warmup_steps(num_training_steps)
        gamma = self.args.lr_step_gamma

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup if warmup else 1.0) * (gamma if step >= milestone else 1.0)

        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
        mark_scheduler_created(self)
        return self.lr_scheduler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, resuming only from complete checkpoints ([`CompleteCheckpointMixin`]).

        The method's one-off `setup` runs first (before a checkpoint's state is restored); the student, the teacher,
        the auxiliary head and the method's state are restored from the checkpoint.
        """
        check_resume(self, resume_from_checkpoint)
        if not self._method_ready:
            self.method.setup(self)
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
        """Training: [`TransferLoss`] of the batch under this micro-batch's mix, each term recorded for logging.
        Evaluation: plain CE."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        step, pixel_values = self.state.global_step, inputs["pixel_values"]
        final_phase = self.in_final_phase(step)
        mix = None if final_phase else self.loss_fn.draw_mix(pixel_values, model, step, self._next_micro_step())
        output = self.loss_fn(model, pixel_values, inputs["labels"], mix, final_phase=final_phase)
        self._record_terms(output.terms, output.mix)
        return (output.loss, {"logits": output.student.logits}) if return_outputs else output.loss

    # ---- logging ----------------------------------------------------------------------------------------------

    def _record_terms(self, terms, mix: Mix | None) -> None:
        metrics, values = self._metrics, {name: value.detach().float() for name, (_, value) in terms.items()}
        self.guard.record(values)
        for name, value in values.items():
            metrics[f"loss_{name}"].append(value)
        if self.args.mixing is not None:
            metrics["mix_lambda"].append(torch.tensor(mix.lam if mix is not None else 1.0))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds to training logs the mean of each recorded loss term (averaged over processes) since the last log."""
        if self.model.training:
            self.guard.raise_if_diverged(self.state.global_step)
            for key, values in sorted(self._metrics.items()):
                mean = torch.stack(values).mean().to(self.args.device)
                logs[key] = self.accelerator.reduce(mean, reduction="mean").item()
            self._metrics.clear()
        super().log(logs, start_time)

    # ---- saving -----------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`: the student as a plain checkpoint of its class, loadable by
        `AutoModelForImageClassification` and `pipeline("image-classification")` (the attached training-only heads
        are left out through `_keys_to_ignore_on_save`). Placeholder `id2label` names are replaced by the class
        names of the training set (a `ClassLabel` column), and the training arguments are also written as JSON
        (`training_args.json`). smile_hf never loads the Trainer's pickled `training_args.bin` (nor does the
        Trainer). A model whose weights are not finite is never saved ([`NonFiniteWeightsError`]).

        A LoRA student is saved as its adapter alone, with its trained head and the image processor (the teacher
        adapter, which checkpoints keep in `smile_state.safetensors`, is left out); `push_to_hub` uploads that.
        For the adapter merged into the base, call [`smile_hf.lora.save_merged`]."""
        self.guard.raise_if_diverged(self.state.global_step)
        check_finite_weights(unwrap_model(self.model), output_dir or self.args.output_dir)
        config = getattr(unwrap_model(self.model), "config", None)
        if config is not None and fill_label_names(config, label_names_from_dataset(self.train_dataset)):
            logger.info("Saving the class names of the training set as `id2label` / `label2id`.")
        if peft_model_of(self.model) is None:
            super().save_model(output_dir, _internal_call)
        else:  # the adapter alone: the stock save would add the teacher's (checkpoints keep it in the SMILE state)
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
            logger.warning(
                f"No image processor saved in {output_dir}: `pipeline('image-classification')` needs one. Pass "
                "`processing_class=AutoImageProcessor.from_pretrained(<pre-trained checkpoint>)` to SmileTrainer."
            )

    def smile_state_dict(self) -> dict[str, torch.Tensor]:
        """The training state the stock Trainer does not checkpoint: source head, teacher, method state.

        Keys are prefixed `source_head.`, `teacher.` (weights, buffers and the EMA counter `teacher.num_updates`)
        and `method.` (and `base_buffers.` for a LoRA student, see [`smile_hf.lora.base_buffers`]); tensors are copied to the CPU (so that tied or shared tensors can go to safetensors)."""
        state = {}
        source_head = getattr(unwrap_model(self.model), SOURCE_HEAD_NAME, None)
        if source_head is not None:
            state.update({f"source_head.{k}": v for k, v in source_head.state_dict().items()})
        if self.teacher is not None:
            state.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        state.update({f"method.{k}": v for k, v in self.method.state_dict().items()})
        state.update({f"base_buffers.{k}": v for k, v in base_buffers(self.model).items()})  # LoRA: see lora.py
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}

    def load_smile_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `smile_state_dict` returned (strictly: every expected part must be there, and nothing else)."""

        def part(prefix):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        source_head = getattr(unwrap_model(self.model), SOURCE_HEAD_NAME, None)
        expected = {"method"} | ({"source_head"} if source_head is not None else set())
        expected |= {"teacher"} if self.teacher is not None else set()
        expected |= {"base_buffers"} if base_buffers(self.model) else set()
        found = {k.split(".", 1)[0] for k in state}
        if found - expected or (expected - {"method"}) - found:
            raise ValueError(
                f"The saved SMILE state has parts {sorted(found)} but method '{self.args.method}' needs "
                f"{sorted(expected - {'method'} | (found & {'method'}))}: was the checkpoint written with another method?"
            )
        if source_head is not None:
            source_head.load_state_dict(part("source_head."))
        if self.teacher is not None:
            self.teacher.load_state_dict(part("teacher."))
        self.method.load_state_dict(part("method."))
        if "base_buffers" in expected:
            load_base_buffers(self.model, part("base_buffers."))

    def extra_checkpoint_files(self) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]]:
        """`smile_state.safetensors`: the state of [`smile_state_dict`], written into every checkpoint."""
        metadata = {"format": "pt", "method": self.args.method, "global_step": str(self.state.global_step)}
        return {SMILE_STATE_NAME: (self.smile_state_dict(), metadata)}

    def checkpoint_marker_fields(self) -> dict[str, str]:
        return {"method": self.args.method}

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """The stock loading of the student, then the SMILE state (`smile_state.safetensors`)."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, SMILE_STATE_NAME)
        if os.path.isfile(path):
            with safetensors.safe_open(path, framework="pt") as f:
                written_by = (f.metadata() or {}).get("method")
            if written_by is not None and parse_method(written_by)[0] != self.args.regularizer:
                raise ValueError(
                    f"{resume_from_checkpoint} was written by method '{written_by}', not '{self.args.method}': resume "
                    "with the same method."
                )
            self.load_smile_state_dict(safetensors.torch.load_file(path, device="cpu"))
        elif self.smile_state_dict():
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {SMILE_STATE_NAME}: it was not written by a complete SmileTrainer "
                "checkpoint save, so the teacher and auxiliary head cannot be restored."
            )

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
        if os.path.isfile(path):  # keep the tags of an existing card, as the stock Trainer does
            try:
                tags += [t for t in (ModelCard.load(path).data.tags or []) if t not in tags]
            except Exception as error:  # an unreadable card is replaced
                logger.warning(f"Replacing the model card {path}, which cannot be parsed ({error}).")
        card = model_card_from_trainer(
            self,
            model=unwrap_model(self.model),
            method_title=method_title(self.args.method),
            method_description=self.method.description,
            method_hyperparameters=method_hyperparameters(self.args),
            method_paper=self.method.paper or None,
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
            **dataset_details,
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(path)
