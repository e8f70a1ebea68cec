# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Calls whose form depends on the installed `transformers` version, each behind one function."""

from __future__ import annotations

try:  # transformers >= 5: a function of trainer_utils
    from transformers.trainer_utils import rotate_checkpoints as _rotate_checkpoints
except ImportError:  # transformers 4.x: a method of Trainer
    _rotate_checkpoints = None


def rotate_checkpoints(trainer, run_dir: str) -> None:
    """Delete the checkpoints of `run_dir` beyond `trainer.args.save_total_limit`, oldest first (by modification
    time), always keeping the newest and the best one."""
    if _rotate_checkpoints is not None:
        _rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=True,
        )
    else:
        trainer._rotate_checkpoints(use_mtime=True, output_dir=run_dir)


def pil_image_processor_class(name: str):
    """The PIL-backed image processor class `name` (transformers >= 5 splits `<name>Pil` from the torchvision-backed
    default, which torchvision-less installs replace by the PIL one with a warning; transformers 4 has one class)."""
    import transformers

    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
