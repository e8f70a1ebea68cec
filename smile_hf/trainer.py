# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""[`SmileTrainer`]: a `transformers.Trainer` whose `compute_loss` adds mixing and the loss terms of a transfer
learning method (SMILE by default) to the fine-tuning of any supported `AutoModelForImageClassification`."""

from __future__ import annotations

import os
from collections import defaultdict

import safetensors.torch
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from huggingface_hub import ModelCard
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging

from .backbones import SOURCE_HEAD_NAME, BackboneAdapter, ForwardOutput, build_source_head_copy, unwrap_model
from .checkpoints import (
    check_checkpoint,
    discard_checkpoint,
    get_last_checkpoint,
    incomplete_checkpoints,
    save_safetensors_atomic,
    write_completion_marker,
)
from .config import SmileTrainingArguments
from .distributed import add_buffer_sync
from .hub import fill_label_names, label_names_from_dataset, model_card_from_trainer
from .methods import LossInputs, build_method, parse_method
from .methods.base import PrepareCallback
from .mixing import Mix, mixed_cross_entropy, mixing_generator, sample_mix
from .modeling import check_teacher_matches, load_source_model
from .teacher import EmaTeacher, EmaTeacherCallback

logger = logging.get_logger(__name__)

SMILE_STATE_NAME = "smile_state.safetensors"
"""File, in each Trainer checkpoint, holding the state the stock Trainer does not know about."""
TRAINING_ARGS_JSON_NAME = "training_args.json"
"""The training arguments saved with the model as JSON, readable without unpickling the Trainer's `training_args.bin`."""


class SmileTrainer(Trainer):
    """Trainer for transfer learning of image classifiers with SMILE and its baselines.

    Args:
        model (`PreTrainedModel`): the student, a pre-trained `AutoModelForImageClassification` whose head has been
            replaced for the target classes (see [`load_student`]).
        args (`SmileTrainingArguments`): the training arguments, the method and its hyperparameters.
        teacher_model (`PreTrainedModel`, *optional*): the source model (the same pre-trained checkpoint, with its
            original head) for the methods that need one. Defaults to loading `model.name_or_path` again.
        **kwargs: every other `Trainer` argument (`train_dataset`, `eval_dataset`, `data_collator`,
            `compute_metrics`, `processing_class`, `callbacks`...).
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
    # compute_loss returns a per-batch mean: the Trainer divides it by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model: nn.Module, args: SmileTrainingArguments, teacher_model: nn.Module | None = None, **kwargs):
        if not isinstance(args, SmileTrainingArguments):
            raise TypeError(f"SmileTrainer needs SmileTrainingArguments, got {type(args).__name__}.")
        self.adapter = BackboneAdapter(model)
        self.method = build_method(args)
        source_model = self._source_model(model, teacher_model)
        if self.method.needs_source_head and not hasattr(model, SOURCE_HEAD_NAME):
            model.add_module(SOURCE_HEAD_NAME, build_source_head_copy(self.adapter, source_model))
        super().__init__(model=model, args=args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.teacher = None
        if self.method.needs_teacher:
            decay = args.ema_decay if self.method.ema_teacher else 1.0
            self.teacher = EmaTeacher(
                source_model,
                self.adapter,
                decay,
                args.ema_update_every,
                include_buffers=args.ema_buffers,
                autocast=lambda: self.accelerator.autocast(),  # the student's mixed precision (accelerate's)
            ).to(args.device)
            if self.method.ema_teacher:
                self.add_callback(EmaTeacherCallback(self.teacher, self.in_final_phase))
        self.add_callback(PrepareCallback(self.method, self))
        for callback in self.method.callbacks(self):
            self.add_callback(callback)
        if args.world_size > 1:  # BatchNorm statistics: the same on every rank for evaluation, saving and the EMA
            add_buffer_sync(self)
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)  # training loss terms since the last log
        self._micro_position = (-1, 0)
        self._method_ready = False

    def _source_model(self, model: nn.Module, teacher_model: nn.Module | None) -> nn.Module | None:
        if not (self.method.needs_teacher or self.method.needs_source_head):
            return None
        if teacher_model is None:
            source = getattr(model, "name_or_path", "")
            if not source:
                raise ValueError(
                    f"Method '{self.method.name}' needs the pre-trained source model (with its original head), but "
                    "the student was not loaded from a checkpoint: pass `teacher_model=`."
                )
            teacher_model = load_source_model(source)
        check_teacher_matches(self.adapter, model, teacher_model)
        return teacher_model

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
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, resuming only from complete checkpoints.

        `resume_from_checkpoint=True` picks the newest *complete* checkpoint of `output_dir`
        ([`smile_hf.checkpoints.get_last_checkpoint`]: checkpoints whose save was interrupted are skipped with a
        warning); a given path must be a complete checkpoint, else [`~smile_hf.checkpoints.IncompleteCheckpointError`]
        says what is wrong with it. The student, the teacher, the auxiliary head and the method's state are restored.
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                incomplete = incomplete_checkpoints(self.args.output_dir)
                raise ValueError(
                    f"No complete checkpoint to resume from in output directory ({self.args.output_dir})"
                    + (f"; incomplete ones (interrupted saves): {incomplete}" if incomplete else "")
                    + "."
                )
        elif resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            check_checkpoint(os.fspath(resume_from_checkpoint))
        if not self._method_ready:
            self.method.setup(self)
            self._method_ready = True
        return super().train(resume_from_checkpoint, *args, **kwargs)

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

    def sample_mix(self, pixel_values: torch.Tensor, model: nn.Module) -> Mix:
        """The mix of this micro-batch, determined by (seed, step, micro-batch, rank)."""
        args = self.args
        rng = mixing_generator(args.seed, self.state.global_step, self._next_micro_step(), args.process_index)
        alpha = args.cutmix_alpha if args.mixing == "cutmix" else args.mixup_alpha
        mix = sample_mix(
            args.mixing,
            alpha,
            pixel_values.shape[0],
            rng,
            image_hw=tuple(pixel_values.shape[-2:]),
            num_stages=len(self.adapter.stages(model)),
            dominant=self.method.dominant_mix,
        )
        return mix.to(pixel_values.device)

    def student_forward(self, model: nn.Module, pixel_values: torch.Tensor, mix: Mix | None) -> ForwardOutput:
        """One forward pass of the student on the mixed batch (the mix is inside the backbone for manifold mixup)."""
        return self.adapter.forward(
            model,
            pixel_values,
            source_head=getattr(unwrap_model(model), SOURCE_HEAD_NAME, None),
            output_hidden_states=self.method.needs_hidden_states,
            mix=mix,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: the method's loss on the (mixed) batch, each term recorded for logging. Evaluation: plain CE."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        final_phase = self.in_final_phase(self.state.global_step)
        mix = None if final_phase or self.args.mixing is None else self.sample_mix(pixel_values, model)
        student = self.student_forward(model, pixel_values, mix)
        teacher = None
        if self.teacher is not None and not final_phase:
            teacher = self.teacher(
                pixel_values,
                output_hidden_states=self.method.needs_hidden_states,
                mix=mix if self.method.teacher_sees_mix else None,
            )
        loss_inputs = LossInputs(
            pixel_values, labels, mix, student, teacher, unwrap_model(model), self.adapter, final_phase
        )
        terms = {"main": (1.0, mixed_cross_entropy(student.logits.float(), labels, mix))}
        terms.update(self.method.loss_terms(loss_inputs))
        loss = sum(weight * value for weight, value in terms.values())
        self._record_terms(terms, mix)
        return (loss, {"logits": student.logits}) if return_outputs else loss

    # ---- logging ----------------------------------------------------------------------------------------------

    def _record_terms(self, terms, mix: Mix | None) -> None:
        metrics = self._metrics
        for name, (_, value) in terms.items():
            metrics[f"loss_{name}"].append(value.detach().float())
        if self.args.mixing is not None:
            metrics["mix_lambda"].append(torch.tensor(mix.lam if mix is not None else 1.0))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds to training logs the mean of each recorded loss term (averaged over processes) since the last log."""
        if self.model.training:
            for key, values in sorted(self._metrics.items()):
                mean = torch.stack(values).mean().to(self.args.device)
                logs[key] = self.accelerator.reduce(mean, reduction="mean").item()
            self._metrics.clear()
        super().log(logs, start_time)

    # ---- saving -----------------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the student as a plain checkpoint of its class, loadable by `AutoModelForImageClassification` and
        `pipeline("image-classification")`: attached training-only heads are left out, placeholder `id2label`
        names are replaced by the class names of the training set (a `ClassLabel` column), and the training
        arguments are also written as JSON (`training_args.json`). smile_hf never loads the Trainer's pickled
        `training_args.bin` (nor does the Trainer)."""
        if state_dict is None:
            state_dict = unwrap_model(self.model).state_dict()
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(SOURCE_HEAD_NAME + ".")}
        config = getattr(unwrap_model(self.model), "config", None)
        if config is not None and fill_label_names(config, label_names_from_dataset(self.train_dataset)):
            logger.info("Saving the class names of the training set as `id2label` / `label2id`.")
        super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        with open(os.path.join(output_dir, TRAINING_ARGS_JSON_NAME), "w", encoding="utf-8") as f:
            f.write(self.args.to_json_string())
        if self.processing_class is None and not getattr(self, "_saving_checkpoint", False):
            logger.warning(
                f"No image processor saved in {output_dir}: `pipeline('image-classification')` needs one. Pass "
                "`processing_class=AutoImageProcessor.from_pretrained(<pre-trained checkpoint>)` to SmileTrainer."
            )

    def smile_state_dict(self) -> dict[str, torch.Tensor]:
        """The training state the stock Trainer does not checkpoint: source head, teacher, method state.

        Keys are prefixed `source_head.`, `teacher.` (weights, buffers and the EMA counter `teacher.num_updates`)
        and `method.`; tensors are copied to the CPU (so that tied or shared tensors can go to safetensors)."""
        state = {}
        source_head = getattr(unwrap_model(self.model), SOURCE_HEAD_NAME, None)
        if source_head is not None:
            state.update({f"source_head.{k}": v for k, v in source_head.state_dict().items()})
        if self.teacher is not None:
            state.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        state.update({f"method.{k}": v for k, v in self.method.state_dict().items()})
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}

    def load_smile_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `smile_state_dict` returned (strictly: every expected part must be there, and nothing else)."""

        def part(prefix):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        source_head = getattr(unwrap_model(self.model), SOURCE_HEAD_NAME, None)
        expected = {"method"} | ({"source_head"} if source_head is not None else set())
        expected |= {"teacher"} if self.teacher is not None else set()
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

    def _save_checkpoint(self, model, trial) -> None:
        """The stock checkpoint, then `smile_state.safetensors`, then (once every process is done) the completion
        marker of [`smile_hf.checkpoints`]. Pushing the checkpoint to the Hub and deleting old checkpoints
        (`save_total_limit`) wait until the marker is written, so an interrupted save never replaces the last
        complete checkpoint, locally or on the Hub."""
        run_dir = self._get_output_dir(trial=trial)
        output_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and os.path.exists(output_dir):
            logger.warning(f"Replacing {output_dir} (left by an earlier run or an interrupted save).")
            discard_checkpoint(output_dir)
        self.accelerator.wait_for_everyone()
        save_total_limit, push_to_hub = self.args.save_total_limit, self.args.push_to_hub
        self.args.save_total_limit, self.args.push_to_hub = None, False
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit, self.args.push_to_hub = save_total_limit, push_to_hub
            self._saving_checkpoint = False
        if self.args.should_save:
            metadata = {"format": "pt", "method": self.args.method, "global_step": str(self.state.global_step)}
            save_safetensors_atomic(self.smile_state_dict(), os.path.join(output_dir, SMILE_STATE_NAME), metadata)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_completion_marker(output_dir, self.state.global_step, method=self.args.method)
        if push_to_hub:
            self._push_from_checkpoint(output_dir)
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

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

    def _issue_warnings_after_load(self, load_result) -> None:
        """The stock warnings about missing / unexpected keys, except for the attached source head: it is not part
        of the saved student, and `_load_from_checkpoint` restores it from `smile_state.safetensors`."""
        missing = [k for k in load_result.missing_keys if not k.startswith(SOURCE_HEAD_NAME + ".")]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

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
    ) -> None:
        """Write the model card, `README.md` in `output_dir`: the method and its hyperparameters, the evaluation
        results (also as `model-index` metadata), the loss terms, intended use and limitations, the SMILE citation
        (see [`smile_hf.hub.model_card_from_trainer`]). Called by `push_to_hub`; never uses the network.

        Args: those of `Trainer.create_model_card` (`finetuned_from` is the base model, `dataset_tags` the dataset's
        Hub id, `dataset` its name, `dataset_args` its configuration), and `template_path` for another template.
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
        )
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(path)
