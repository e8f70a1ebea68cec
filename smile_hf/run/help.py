# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""A `--help` a person can read: a short description, the options in groups (data, model, method, comparison,
tuning, recipe, output, then every other `Trainer` option: [`GROUP_TITLES`]), and each default as the driver applies
it. Only the help changes: the parser's actions, and so the parsing, are the ones `HfArgumentParser` built."""

from __future__ import annotations

import argparse
from dataclasses import fields

from transformers import HfArgumentParser, TrainingArguments

from ..config import SmileTrainingArguments

RECIPE_ARGUMENTS = (
    "reference_recipe", "optim", "optim_args", "learning_rate", "weight_decay", "max_grad_norm", "lr_scheduler_type",
    "lr_step_fraction", "lr_step_gamma", "warmup_steps", "warmup_ratio", "per_device_train_batch_size",
    "gradient_accumulation_steps", "max_steps", "num_train_epochs", "seed",
)  # fmt: skip
"""The optimisation recipe: what `--reference_recipe` sets, and the length of training."""
OUTPUT_ARGUMENTS = (
    "do_train", "do_eval", "do_predict", "output_dir", "overwrite_output_dir", "resume_from_checkpoint",
    "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit", "logging_steps", "report_to",
    "push_to_hub", "hub_model_id",
)  # fmt: skip
"""What a run does and writes: training / evaluation / prediction, the output folder and resuming, evaluations,
checkpoints, logs, the Hub."""
TRAINER_ARGUMENTS = (
    "channels_last", "nan_policy", "max_consecutive_skips", "model_init_kwargs", "eval_loss_terms",
    "teacher_fold_batchnorm", "teacher_channels_last", "teacher_bf16",
)  # fmt: skip
"""Options `SmileTrainingArguments` adds that belong with the `Trainer`'s own (memory format, divergence, loading)."""

SCRIPT_HELP = {
    "do_train": "Train (default: True; --do_train False evaluates (--do_eval) or classifies (--do_predict) with the "
    "trained model of --model_name_or_path).",
    "do_eval": "With --do_train False: evaluate the trained model of --model_name_or_path on the validation data (a "
    "training run always evaluates). (default: False)",
    "do_predict": "Classify the images of --predict_dir (the texts of --predict_file) into "
    "<output_dir>/predictions.csv, after training or with --do_train False. (default: False)",
    "output_dir": "Where the model, its card, the checkpoints and results.json go (default: "
    "runs/<dataset>-<method>-<model>).",
    "resume_from_checkpoint": "Resume from this checkpoint folder, or 'last': the newest complete checkpoint of "
    "--output_dir, whatever the arguments. Without it, a rerun with the same arguments resumes; another run's "
    "checkpoints are refused.",
}
"""The help of the options whose meaning a run script sets (the `TrainingArguments` help says "not used by the
Trainer")."""
SCRIPT_DEFAULTS = {
    "report_to": "tensorboard when TensorBoard is installed, else none",
    "dataloader_num_workers": "with an accelerator, the CPU cores per process less one (at most 16); without, 0",
    "dataloader_persistent_workers": "True with data loader workers",
    "dataloader_pin_memory": "True with an accelerator, False without",
}
"""The defaults a run script fills in ([`finalize_args`]), shown instead of the dataclass default."""

GROUP_TITLES = {
    "data": "data (a --dataset preset, your own --train_dir / --validation_dir image folders, or --train_file / "
    "--validation_file texts)",
    "model": "model (the checkpoint to fine-tune)",
    "method": "method (SMILE and the baselines, their mixing and hyperparameters)",
    "comparison": "comparison (several methods over seeds)",
    "tuning": "tuning (a validation split held out of the training data, a hyperparameter search on it)",
    "recipe": "recipe (optimiser, learning rate and length of training; with --dataset, the defaults are the "
    "preset's recipe, logged at the start)",
    "output": "output (what the run does and writes, resuming, checkpoints, logs, the Hub)",
    "trainer": "all Trainer options (transformers.TrainingArguments)",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; each option's default after its help, unless the help states it or it is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreFalseAction):  # --no_<flag>: its default is the flag's
            return text
        return f"{text} (default: %(default)s)"


def argument_groups(extra: dict[str, tuple] | None = None) -> dict[str, str]:
    """Option name (`dest`) -> group key of [`GROUP_TITLES`] for the options of [`SmileTrainingArguments`] that are
    not the `Trainer`'s and are not a recipe, output or Trainer option: the method's (whatever regulariser declares
    them); then `extra` (group key -> dataclass) adds the fields of more dataclasses."""
    stock = {f.name for f in fields(TrainingArguments)}
    groups = {name: "recipe" for name in RECIPE_ARGUMENTS} | {name: "output" for name in OUTPUT_ARGUMENTS}
    groups |= {name: "trainer" for name in TRAINER_ARGUMENTS}
    for f in fields(SmileTrainingArguments):
        if f.name not in stock:
            groups.setdefault(f.name, "method")
    for key, dataclass_type in (extra or {}).items():
        groups |= {f.name: key for f in fields(dataclass_type)}
    return groups


def group_help(
    parser: HfArgumentParser,
    groups: dict[str, str],
    script_help: dict[str, str] | None = None,
    hidden: tuple[str, ...] = (),
) -> HfArgumentParser:
    """Regroup `parser`'s options for `--help` in the order of [`GROUP_TITLES`] (`groups`: option -> group key; any
    other option is a Trainer option; recipe and output options in the order of [`RECIPE_ARGUMENTS`] and
    [`OUTPUT_ARGUMENTS`]), give the options of [`SCRIPT_HELP`] (updated with `script_help`) their help and the
    others their [`SCRIPT_DEFAULTS`], and document each `--no_<flag>` as the opposite of `--<flag>`. Only the help
    changes: the actions, their order in the parser and so the parsing stay as they are. The options named in
    `hidden` are left out of the help."""
    script_help = SCRIPT_HELP | (script_help or {})
    parser.formatter_class = HelpFormatter
    titled = {key: parser.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    other = parser.add_argument_group("options")
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            other._group_actions.append(action)
            continue
        if action.dest in hidden:
            action.help = argparse.SUPPRESS
        elif action.option_strings[0].startswith("--no_"):
            action.help = f"Same as --{action.dest} False."
        elif action.dest in script_help:
            action.help = script_help[action.dest]
        elif action.dest in SCRIPT_DEFAULTS:
            action.help = f"{(action.help or '').rstrip('.')} (default: {SCRIPT_DEFAULTS[action.dest]})."
        titled[groups.get(action.dest, "trainer")]._group_actions.append(action)
    for key, order in (("recipe", RECIPE_ARGUMENTS), ("output", OUTPUT_ARGUMENTS)):
        titled[key]._group_actions.sort(key=lambda a: (order.index(a.dest) if a.dest in order else len(order)))
    parser._action_groups = [other] + [group for group in titled.values() if group._group_actions]
    return parser
