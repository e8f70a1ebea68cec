# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Activation checkpointing (`activation_checkpointing=True`, formerly `gradient_checkpointing=True`) under
[`SmileTrainer`]: what runs, and the one-line refusals of what cannot.

The stock `Trainer` switches it on (`model.activation_checkpointing_enable(...)`, with
`activation_checkpointing_kwargs`) when training starts: the layers of the model that support it
(`GradientCheckpointingLayer`) run their forward pass again in the backward pass instead of keeping their
activations. The feature hooks ([`smile_hf.backbones.capture`]) read each forward pass once and ignore the
recomputation, so every method that mixes the input images (mixup, CutMix, SMILE) or reads the last feature map, the
pooled feature or the weights gets the losses and gradients it gets without checkpointing (tested bit for bit on the
CPU for SMILE, mixup, CutMix, L2-SP, DELTA, BSS, Co-Tuning and LoRA; `delta_tllib` is for ResNet, which does not
support checkpointing). Refused, in one line each:

- manifold mixup: it replaces a stage output inside the forward pass, and the recomputation of a checkpointed layer
  would run without that replacement;
- a model whose transformers class does not support it (`supports_gradient_checkpointing=False`: ResNet,
  ConvNeXt, EfficientNet, MobileNet, timm models...);
- `use_reentrant=True` with LoRA (`peft_config`), whose frozen input layers leave the checkpointed layers without
  an input that requires gradients (reentrant checkpointing would then give the adapters none), or with a method
  that reads a feature map inside the backbone (DELTA), which reentrant checkpointing computes without autograd.
  The default (`use_reentrant=False`, transformers' default) runs every method above;
- `offload=True` on the CPU (it moves activations from an accelerator into pinned host memory).
"""

from __future__ import annotations

from transformers import TrainingArguments

from .methods import REGULARIZERS

_FIX = "leave activation_checkpointing off (lower per_device_train_batch_size and raise gradient_accumulation_steps)"


def _reentrant(args: TrainingArguments) -> bool:
    kwargs = args.activation_checkpointing_kwargs
    return bool(isinstance(kwargs, dict) and kwargs.get("use_reentrant", False))


def check_activation_checkpointing(args: TrainingArguments) -> None:
    """Raise `ValueError` in one line when `args.activation_checkpointing` cannot give the method's exact losses and
    gradients (manifold mixup, reentrant checkpointing with a method that reads inner feature maps) or cannot run
    (`offload` on the CPU).

    Args:
        args ([`SmileTrainingArguments`]): the arguments, after `TrainingArguments.__post_init__` (which resolves
            the former `gradient_checkpointing*` names).
    """
    if not args.activation_checkpointing:
        return
    if args.mixing == "manifold_mixup":
        raise ValueError(
            "SmileTrainer does not support `activation_checkpointing=True` with manifold mixup: it mixes a stage "
            f"output inside the forward pass, which the recomputation in the backward pass would not mix; {_FIX}, or "
            "mix the input images (method='...+mixup' or '+cutmix')."
        )
    kwargs = args.activation_checkpointing_kwargs
    if isinstance(kwargs, dict) and kwargs.get("offload") and args.device.type == "cpu":
        raise ValueError(
            "SmileTrainer cannot honour `activation_checkpointing_kwargs={'offload': True}` on the CPU: it moves the "
            "saved activations from an accelerator into pinned host memory, which the CPU has neither of; drop offload."
        )
    method = REGULARIZERS.get(args.regularizer)
    if _reentrant(args) and getattr(method, "hook_points", None) is not None:
        raise ValueError(
            f"SmileTrainer does not support `activation_checkpointing_kwargs={{'use_reentrant': True}}` with "
            f"method '{args.regularizer}': it reads feature maps inside the backbone, which reentrant checkpointing "
            "computes without autograd; drop use_reentrant (False, the default, is exact)."
        )


def check_model_supports_activation_checkpointing(args: TrainingArguments, model, peft: bool = False) -> None:
    """Raise `ValueError` in one line when `args.activation_checkpointing` is on and `model` (the student, possibly a
    `PeftModel`) cannot take it: its class does not support it, or reentrant checkpointing would leave LoRA adapters
    without gradients (`peft`: the student trains LoRA adapters)."""
    if not args.activation_checkpointing:
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        name = type(model.get_base_model() if peft else model).__name__
        raise ValueError(
            f"SmileTrainer cannot use `activation_checkpointing=True` with {name}: its transformers class does not "
            f"support activation checkpointing (supports_gradient_checkpointing=False); {_FIX}, or train a family "
            "that supports it (ViT, DeiT, BEiT, DINOv2, Swin, PVT-v2)."
        )
    if peft and _reentrant(args):
        raise ValueError(
            "SmileTrainer does not support `activation_checkpointing_kwargs={'use_reentrant': True}` with LoRA "
            "(peft_config): the frozen layers before the checkpointed ones leave them no input that requires "
            "gradients, so reentrant checkpointing would give the adapters none; drop use_reentrant (False, the "
            "default, is exact)."
        )
