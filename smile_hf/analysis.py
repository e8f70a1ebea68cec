# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""How linear a model is in-between samples: the analysis behind the SMILE paper's claim that mixup "could
marginally increase the linearity in-between training samples" while SMILE improves "the mixup effects in both label
and feature spaces with both training and testing datasets".

For `n` random pairs of distinct images `(x_i, x'_i)` of a split and each `lambda` of a grid, the model's output on
the mixed image, `f(lambda x_i + (1 - lambda) x'_i)`, is compared with the mix of its outputs,
`lambda f(x_i) + (1 - lambda) f(x'_i)`. A model that is linear (affine) in between the two images gives the same
thing. The images are mixed as the model sees them (normalised `pixel_values`, as mixup mixes them in training), and
the model runs in eval mode. With `d` a distance of the space (below), for each `lambda`:

- `deviation(lambda) = mean_i d(f(mix_i), lambda f(x_i) + (1 - lambda) f(x'_i))`;
- `scale = mean_i d(f(x_i), f(x'_i))`, how far apart the pairs are to begin with;
- `relative(lambda) = deviation(lambda) / scale`: unchanged when `f` is multiplied by a constant or shifted, so that
  models, layers and families compare; 0 for a linear model; for `f(x) = x^2` on the pair `(2, 0)` it is
  `lambda (1 - lambda)` (`deviation = 4 lambda (1 - lambda)`, `scale = 4`).

The spaces ([`SPACES`]):

- `probabilities`: the softmax of the model's (new) head; `d` is the total variation distance
  `TV(p, q) = 1/2 sum_k |p_k - q_k|` (in [0, 1], so `deviation` is comparable by itself too). Also reported:
  `kl(lambda) = mean_i KL(lambda p(x_i) + (1 - lambda) p(x'_i) || p(mix_i))` (nats), the excess of the mixup loss
  with the model's own soft labels as targets, and, with labels, `mixup_ce(lambda) = mean_i -[lambda log p(mix_i)_y
  + (1 - lambda) log p(mix_i)_y']`, the mixup loss itself;
- `source_probabilities`: the same for the source-task head (SMILE's auxiliary head, Co-Tuning's source head),
  when the model has one;
- `pooled`: the pooled feature the head reads; `d` is the Euclidean distance;
- `feature_map`: the last feature map before pooling (C x H x W, flattened; the patch tokens of ViT-like models);
  `d` is the Euclidean (Frobenius) distance.

Every `mean_*` value of the results is the mean over the `lambda` grid. [`analyze_run`] measures a saved run
(`examples/analyze_linearity.py`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from torch import nn

from .backbones import BackboneAdapter, combine_heads
from .backbones.text import saved_text_classifier
from .method_state import method_state_path
from .plotting import pyplot, save_figure

if TYPE_CHECKING:
    from .data import PreparedData

logger = logging.getLogger(__name__)

LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The default grid of mixing coefficients."""
SPACES = {"probabilities": "tv", "source_probabilities": "tv", "pooled": "l2", "feature_map": "l2"}
"""The spaces measured and the distance of each (total variation or Euclidean)."""


# ---- the metric ------------------------------------------------------------------------------------------------------


def distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Row-wise distance of two n x D tensors: `"tv"` (total variation, `1/2 L1`) or `"l2"` (Euclidean)."""
    if kind == "tv":
        return 0.5 * (a - b).abs().sum(dim=1)
    if kind == "l2":
        return torch.linalg.vector_norm(a - b, dim=1)
    raise ValueError(f"Unknown distance '{kind}': use 'tv' or 'l2'.")


def deviation_from_linearity(
    f_a: torch.Tensor, f_b: torch.Tensor, f_mixed: Sequence[torch.Tensor], lambdas: Sequence[float], kind: str
) -> dict[str, Any]:
    """The deviation of `f_mixed[j]` (outputs on `lambdas[j] a + (1 - lambdas[j]) b`) from the interpolation of the
    outputs `f_a`, `f_b` (n x D each), as defined in the module docstring: `scale`, `deviation` and `relative` per
    lambda, their means over lambda, and for probabilities (`kind="tv"`) `kl` per lambda and its mean."""
    f_a, f_b = f_a.double(), f_b.double()
    scale = float(distance(f_a, f_b, kind).mean())
    deviation, kl = [], []
    for lam, f_mix in zip(lambdas, f_mixed):
        interpolation = lam * f_a + (1 - lam) * f_b
        deviation.append(float(distance(f_mix.double(), interpolation, kind).mean()))
        if kind == "tv":
            target, predicted = interpolation.clamp_min(1e-300), f_mix.double().clamp_min(1e-300)
            kl.append(float((interpolation * (target.log() - predicted.log())).sum(dim=1).mean()))
    relative = [d / scale if scale > 0 else float("nan") for d in deviation]
    result = {"distance": kind, "scale": scale, "deviation": deviation, "relative": relative,
              "mean_deviation": _mean(deviation), "mean_relative": _mean(relative)}  # fmt: skip
    if kind == "tv":
        result.update(kl=kl, mean_kl=_mean(kl))
    return result


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


# ---- measuring a model -------------------------------------------------------------------------------------------


@torch.no_grad()
def model_outputs(
    model: nn.Module,
    pixel_values: torch.Tensor,
    source_head: nn.Module | None = None,
    batch_size: int = 64,
    adapter: BackboneAdapter | None = None,
) -> dict[str, torch.Tensor]:
    """The outputs of `model` (in eval mode) on `pixel_values`, per space of [`SPACES`]: `probabilities`,
    `source_probabilities` (with `source_head`, applied to the pooled feature), `pooled`, `feature_map` (flattened),
    each n x D, float64 on the CPU. Read with `adapter` (default: a new [`BackboneAdapter`] of `model`)."""
    adapter = adapter or BackboneAdapter(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in pixel_values.split(batch_size):
        out = adapter.forward(model, batch.to(device), source_head=source_head)
        found = {"probabilities": out.logits.softmax(-1), "pooled": out.pooled, "feature_map": out.feature_map.flatten(1)}
        if out.source_logits is not None:
            found["source_probabilities"] = out.source_logits.softmax(-1)
        for name, value in found.items():
            parts.setdefault(name, []).append(value.double().cpu())
    model.train(was_training)
    return {name: torch.cat(values) for name, values in parts.items()}


def mixup_cross_entropy(probabilities: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: float) -> float:
    """`mean_i -[lam log p_i[y_a] + (1 - lam) log p_i[y_b]]`: the mixup loss of the mixed images' probabilities."""
    log_p = probabilities.clamp_min(1e-300).log()
    rows = torch.arange(len(log_p))
    return float(-(lam * log_p[rows, labels_a] + (1 - lam) * log_p[rows, labels_b]).mean())


def random_pairs(num_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(a, b)` of `num_images` pairs of distinct images: a seeded random order, each image paired with the
    next one (the last with the first), so that each image is once `x` and once `x'`."""
    if num_images < 2:
        raise ValueError(f"The linearity analysis needs at least 2 images, got {num_images}.")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return order, order.roll(-1)


def measure_linearity(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor | None = None,
    lambdas: Sequence[float] = LAMBDAS,
    source_head: nn.Module | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """How far `model` is from linear in-between the images `pixel_values` (n x 3 x H x W, paired by
    [`random_pairs`]), in every space of [`SPACES`] it has (see the module docstring for the definitions).

    Returns:
        `{"lambdas", "num_pairs", "spaces": {space: deviation_from_linearity(...)}}`, with `mixup_ce` (per lambda)
        and `mean_mixup_ce` in the `probabilities` space when `labels` are given.
    """
    if any(not 0.0 < lam < 1.0 for lam in lambdas):
        raise ValueError(f"Every lambda must be in (0, 1), got {list(lambdas)}.")
    a, b = random_pairs(len(pixel_values), seed)
    adapter = BackboneAdapter(model)
    ends = model_outputs(model, pixel_values, source_head, batch_size, adapter)
    mixed = [model_outputs(model, lam * pixel_values[a] + (1 - lam) * pixel_values[b], source_head, batch_size, adapter)
             for lam in lambdas]  # fmt: skip
    spaces = {
        name: deviation_from_linearity(ends[name][a], ends[name][b], [m[name] for m in mixed], lambdas, kind)
        for name, kind in SPACES.items() if name in ends
    }  # fmt: skip
    if labels is not None:
        ce = [mixup_cross_entropy(m["probabilities"], labels[a], labels[b], lam) for lam, m in zip(lambdas, mixed)]
        spaces["probabilities"].update(mixup_ce=ce, mean_mixup_ce=_mean(ce))
    return {"lambdas": list(lambdas), "num_pairs": len(a), "spaces": spaces}


# ---- a saved run ---------------------------------------------------------------------------------------------------


def load_source_head(run_dir: str, model: nn.Module) -> nn.Module | None:
    """The trained source-task head of a run (SMILE's auxiliary head, Co-Tuning's source head): read from the method
    state (`method_state.safetensors`, or its former name) of its last checkpoint (`checkpoint-<step>`), shaped as
    `model`'s classifier(s) with the source classes. None when the run has no such checkpoint or its method has no
    source head."""
    checkpoints = [path for path in glob.glob(os.path.join(run_dir, "checkpoint-*")) if method_state_path(path)]
    if not checkpoints:
        return None
    last = method_state_path(max(checkpoints, key=lambda p: int(re.findall(r"checkpoint-(\d+)", p)[-1])))
    state = {k.removeprefix("source_head."): v for k, v in safetensors.torch.load_file(last).items()
             if k.startswith("source_head.")}  # fmt: skip
    if not state:
        return None
    adapter = BackboneAdapter(model)
    count = len(adapter.classifiers(model))
    prefixes = [""] if count == 1 else [f"{k}." for k in range(count)]
    heads = [nn.Linear(state[f"{p}weight"].shape[1], state[f"{p}weight"].shape[0], bias=f"{p}bias" in state)
             for p in prefixes]  # fmt: skip
    head = combine_heads(heads, adapter.spec.shared_head_input)
    head.load_state_dict(state)
    return head.to(next(model.parameters()).device)


RUN_DATA_ARGUMENTS = ("dataset", "train_dir", "validation_dir", "image_column", "label_column", "train_val_split",
                      "max_train_samples", "max_eval_samples", "train_samples_per_class")  # fmt: skip
"""The data arguments of a run's `run_config.json` that choose its examples."""


def run_data(run_dir: str, **overrides: Any) -> PreparedData:
    """The data a run was trained and evaluated on, rebuilt from its `run_config.json` (with the run's seed), images not
    decoded and no transform attached. `overrides` replace data arguments (e.g. `train_samples_per_class=None`)."""
    from .data import prepare_datasets

    with open(os.path.join(run_dir, "run_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    arguments = {k: config["data"].get(k) for k in RUN_DATA_ARGUMENTS} | overrides
    return prepare_datasets(
        **{k: v for k, v in arguments.items() if v is not None}, num_labels=config["model"].get("num_labels"),
        seed=config["training"]["seed"], disable_tqdm=True,
    )  # fmt: skip


def exported_images(run_dir: str, data: PreparedData, dataset, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples `indices` of `dataset` (a split of `data`) and their labels, through the evaluation transform the
    run exported with its model (no augmentation, whatever the split)."""
    from transformers import AutoImageProcessor

    from .data import BatchTransform, ImageTransform, TransformConfig, collate

    transform = ImageTransform(TransformConfig.for_evaluation(AutoImageProcessor.from_pretrained(run_dir)), train=False)
    dataset = dataset.with_transform(BatchTransform(transform, data.image_column, data.label_column, "analysis"))
    batch = collate([dataset[int(i)] for i in indices])
    return batch["pixel_values"], batch["labels"]


def run_images(run_dir: str, split: str, num_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_images` images (at most the split's size, drawn with `seed`) and their labels from split `"train"` or
    `"eval"` of the data a run was trained on ([`run_data`]), through the evaluation transform the run exported
    ([`exported_images`])."""
    data = run_data(run_dir)
    dataset = {"train": data.train, "eval": data.eval}[split]
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_images]
    return exported_images(run_dir, data, dataset, chosen.tolist())


def check_image_run(run_dir: str) -> None:
    """A `ValueError` of one line if the model saved in `run_dir` is a text classifier: the analysis mixes images."""
    if text := saved_text_classifier(run_dir):
        raise ValueError(
            f"{run_dir} holds a text classifier ({text}): the linearity analysis mixes images (`pixel_values`) and "
            "does not measure text models."
        )


def analyze_run(
    run_dir: str, splits: Sequence[str] = ("train", "eval"), num_pairs: int = 200,
    lambdas: Sequence[float] = LAMBDAS, seed: int = 0, batch_size: int = 64,
) -> dict[str, Any]:  # fmt: skip
    """[`measure_linearity`] of the model saved in `run_dir` (its source head too, see [`load_source_head`]) on
    `num_pairs` pairs of each split of `splits` ([`run_images`]). Returns `{"run", "method", "seed", "splits":
    {split: measure_linearity(...)}}`."""
    from transformers import AutoModelForImageClassification

    check_image_run(run_dir)
    model = AutoModelForImageClassification.from_pretrained(run_dir).eval()
    source_head = load_source_head(run_dir, model)
    with open(os.path.join(run_dir, "run_config.json"), encoding="utf-8") as f:
        training = json.load(f)["training"]
    result = {"run": os.path.normpath(run_dir), "method": training.get("method"), "seed": training.get("seed"),
              "splits": {}}  # fmt: skip
    for split in splits:
        pixel_values, labels = run_images(run_dir, split, num_pairs, seed)
        result["splits"][split] = measure_linearity(model, pixel_values, labels, lambdas, source_head, batch_size, seed)
    return result


# ---- reporting -------------------------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("probabilities", "mean_relative", "p: TV rel."),
    ("probabilities", "mean_deviation", "p: TV"),
    ("probabilities", "mean_kl", "p: KL (nats)"),
    ("probabilities", "mean_mixup_ce", "p: mixup CE"),
    ("source_probabilities", "mean_relative", "source p: TV rel."),
    ("pooled", "mean_relative", "pooled: rel."),
    ("feature_map", "mean_relative", "map: rel."),
)
"""The columns of [`linearity_table`]: (space, value, header)."""


def _value(measured: dict[str, Any], space: str, key: str) -> float | None:
    return measured["spaces"].get(space, {}).get(key)


def linearity_table(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of [`analyze_run`] results: one row per run and split, the mean over lambda of each value of
    [`TABLE_COLUMNS`] ("-" where the run has no such space)."""
    lines = ["| run | method | split | " + " | ".join(h for _, _, h in TABLE_COLUMNS) + " |",
             "|---|---|---|" + "---:|" * len(TABLE_COLUMNS)]  # fmt: skip
    for result in results:
        for split, measured in result["splits"].items():
            values = [_value(measured, space, key) for space, key, _ in TABLE_COLUMNS]
            cells = ["-" if value is None else f"{value:.4f}" for value in values]
            name = os.path.basename(result["run"])
            lines.append(f"| {name} | {result['method']} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _by_method_and_split(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        for split, measured in result["splits"].items():
            groups.setdefault((result["method"], split), []).append(measured)
    return groups


def linearity_summary(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of [`analyze_run`] results grouped by method and split: for each value of [`TABLE_COLUMNS`],
    the mean over the group's runs (seeds) ± their sample standard deviation."""
    lines = ["| method | split | runs | " + " | ".join(h for _, _, h in TABLE_COLUMNS) + " |",
             "|---|---|---:|" + "---:|" * len(TABLE_COLUMNS)]  # fmt: skip
    for (method, split), group in _by_method_and_split(results).items():
        cells = []
        for space, key, _ in TABLE_COLUMNS:
            values = torch.tensor([v for m in group if (v := _value(m, space, key)) is not None], dtype=torch.float64)
            if len(values) == 0:
                cells.append("-")
            else:
                spread = f" ± {float(values.std()):.4f}" if len(values) > 1 else ""
                cells.append(f"{float(values.mean()):.4f}{spread}")
        lines.append(f"| {method} | {split} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_linearity(results: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """One panel per space: `relative(lambda)` of each method (one color; the mean over its runs) and split (train
    solid, eval dashed) of [`analyze_run`] results. Writes the PNG `path` (needs matplotlib, imported here) and
    returns it."""
    plt = pyplot("plot_linearity")
    groups = _by_method_and_split(results)
    spaces = [s for s in SPACES if any(s in m["spaces"] for group in groups.values() for m in group)]
    methods = list(dict.fromkeys(method for method, _ in groups))
    fig, axes = plt.subplots(1, len(spaces), figsize=(3.6 * len(spaces), 3.4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        for (method, split), group in groups.items():
            curves = [m["spaces"][space]["relative"] for m in group if space in m["spaces"]]
            if curves:
                mean = torch.tensor(curves, dtype=torch.float64).mean(dim=0).tolist()
                ax.plot(group[0]["lambdas"], mean, color=f"C{methods.index(method)}", marker="o", markersize=3,
                        linestyle="-" if split == "train" else "--", label=f"{method} {split}")  # fmt: skip
        ax.set(title=f"{space} ({SPACES[space]})", xlabel="lambda", ylabel="deviation / scale")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, title)


def write_linearity(result: dict[str, Any], output_dir: str) -> list[str]:
    """Write `linearity.json`, `linearity.md` ([`linearity_table`]) and, with matplotlib, `linearity.png` in
    `output_dir`; return the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, f"linearity.{ext}") for ext in ("json", "md")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(paths[1], "w", encoding="utf-8") as f:
        f.write(linearity_table([result]) + "\n")
    try:
        title = f"{os.path.basename(result['run'])} ({result['method']})"
        paths.append(plot_linearity([result], os.path.join(output_dir, "linearity.png"), title))
    except ImportError as error:
        logger.warning(f"No linearity plot: {error}")
    return paths


def linearity_report(results: Sequence[dict[str, Any]]) -> str:
    """The table of every run ([`linearity_table`]) and the mean over the runs of each method
    ([`linearity_summary`]), in Markdown."""
    return (linearity_table(results) + "\n\nMean over the runs of each method (± sample std):\n\n"
            + linearity_summary(results))  # fmt: skip


def write_linearity_report(results: Sequence[dict[str, Any]], path: str, command: str | None = None) -> list[str]:
    """Write [`linearity_report`] of [`analyze_run`] results to the Markdown file `path`, the results beside it as
    JSON (same name, `{"command", "runs"}`) and, with matplotlib, the plot of every method ([`plot_linearity`]) as
    PNG; return the paths written."""
    stem = os.path.splitext(path)[0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(linearity_report(results) + "\n")
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump({"command": command, "runs": list(results)}, f, indent=1)
    paths = [path, stem + ".json"]
    try:
        paths.append(plot_linearity(results, stem + ".png", title="relative deviation from linearity, mean over runs"))
    except ImportError as error:
        logger.warning(f"No linearity plot: {error}")
    return paths


__all__ = [
    "LAMBDAS", "RUN_DATA_ARGUMENTS", "SPACES", "TABLE_COLUMNS", "analyze_run", "deviation_from_linearity", "distance",
    "exported_images", "linearity_report", "linearity_summary", "linearity_table", "load_source_head", "measure_linearity",
    "mixup_cross_entropy", "model_outputs", "plot_linearity", "random_pairs", "run_data", "run_images",
    "write_linearity", "write_linearity_report",
]  # fmt: skip
