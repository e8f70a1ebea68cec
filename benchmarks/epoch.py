# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""One epoch from JPEG files, as a user runs it: stock fine-tuning against SMILE through the run driver.

It writes folders of generated JPEGs (one sub-folder per class; smooth random fields plus fine noise, quality 90, as in
`data_speed.py`) at each `--sizes`, then runs `smile-hf train --train_dir FOLDER --method finetune|smile
--num_train_epochs 1` in this process (`smile_hf.run.main`) with the run driver's default DataLoader settings (on a
GPU one worker per core less one, persistent, pinned memory; on the CPU the loading in the main process). For each
(image size, model, method) it reports:

- images/s of the training epoch (training images / the `Trainer`'s training wall time);
- the fraction of that time the training loop waited for data (a `TrainerCallback`, [`benchmarks.run_timing.StepTimer`]:
  the gaps between one step's end and the next step's start, where the `Trainer` fetches the next batch);
- SMILE's epoch / stock fine-tuning's epoch, paired run by run (the two methods alternate, their order flipped every
  repeat) and reported as the median over repeats.

The run's evaluation after training (on the `--train_val_split` held out of the folder) is not part of the epoch.

Models: on a CUDA device ResNet-50 and ViT-B/16 at 224 px in bf16 (random weights from their configs, saved as local
checkpoints with their image processors: the same layers and input size as microsoft/resnet-50 and
google/vit-base-patch16-224); on the CPU the bundled checkpoint `checkpoints/fmnist-resnet-tiny` (32 px).

    python -m benchmarks.epoch --device cuda                  # ~2,000 images per size -> results/epoch.{json,md}
    python -m benchmarks.epoch --device cpu --images 64       # small, on the CPU
    python -m benchmarks.epoch --device cpu --images 8 --repeats 1 --output /tmp/e.json --markdown /tmp/e.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch

from .common import RESULTS_DIR, SOURCE_CHECKPOINT, environment, log, markdown_table, publish, write_json, write_text
from .data_speed import make_jpegs
from .run_timing import device_and_load, load_average, run_driver, timed_trainers

METHODS = ("finetune", "smile")
TARGET_RATIO = 1.15
TARGET_WAIT = 0.10
GPU_BATCH = {"resnet50": 128, "vit-b16": 64}


def write_image(path: str, width: int, height: int, seed: int) -> None:
    with open(path, "wb") as f:
        f.write(make_jpegs(width, height, 1, seed=seed)[0])


def image_folder(root: str, width: int, height: int, count: int, classes: int) -> str:
    """`root/<width>x<height>-<count>/class_<k>/<i>.jpg`: `count` generated JPEGs over `classes` classes, written once
    (reused when complete)."""
    folder = os.path.join(root, f"{width}x{height}-{count}")
    paths = [os.path.join(folder, f"class_{i % classes}", f"{i:05d}.jpg") for i in range(count)]
    missing = [(i, p) for i, p in enumerate(paths) if not os.path.isfile(p)]
    for k in range(classes):
        os.makedirs(os.path.join(folder, f"class_{k}"), exist_ok=True)
    if missing:
        log(f"writing {len(missing)} JPEGs of {width}x{height} into {folder}")
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(write_image, [p for _, p in missing], [width] * len(missing), [height] * len(missing),
                          [i for i, _ in missing], chunksize=8))  # fmt: skip
    return folder


def gpu_checkpoints(root: str) -> dict[str, str]:
    """ResNet-50 and ViT-B/16 (random weights, 1,000 classes) with their image processors, saved under `root`."""
    import transformers

    from .gpu_models import SOURCE_LABELS, resnet50, vit_b16

    processors = {
        "resnet50": (resnet50, transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)),
        "vit-b16": (vit_b16, transformers.ViTImageProcessor(size={"height": 224, "width": 224})),
    }
    paths = {}
    for name, (config, processor) in processors.items():
        path = paths[name] = os.path.join(root, f"checkpoint-{name}")
        if not os.path.isfile(os.path.join(path, "config.json")):
            torch.manual_seed(0)
            model = transformers.AutoModelForImageClassification.from_config(config(SOURCE_LABELS))
            model.save_pretrained(path)
            processor.save_pretrained(path)
    return paths


def run_epoch(folder: str, model: str, method: str, batch_size: int, device: str, output_dir: str) -> dict:
    """One epoch of `method` through the run driver; the [`StepTimer`] summary plus the command's wall time."""
    argv = [
        "--train_dir", folder, "--model_name_or_path", model, "--method", method, "--output_dir", output_dir,
        "--overwrite_output_dir", "True", "--num_train_epochs", "1", "--per_device_train_batch_size", str(batch_size),
        "--per_device_eval_batch_size", str(batch_size), "--save_strategy", "no", "--eval_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "True", "--log_level", "warning", "--seed", "0",
    ]  # fmt: skip
    if device == "cuda":
        argv += ["--bf16", "True"]
    else:
        argv += ["--use_cpu", "True"]
    timers = []
    with timed_trainers(timers, synchronize=device == "cuda"):
        run, wall = run_driver(argv)
    result = timers[0].summary()
    result.update(command_s=wall, num_train=run["num_train"], images_per_s=run["num_train"] / result["train_s"])
    return result


def benchmark(args: argparse.Namespace, root: str, done: Callable[[dict], None]) -> dict:
    """Every (size, model) pair: the methods alternating over `args.repeats` repeats; `done(results)` after each
    pair (the results so far, so that a run stopped by a time limit leaves what it measured)."""
    models = gpu_checkpoints(root) if args.device == "cuda" else {"fmnist-resnet-tiny": SOURCE_CHECKPOINT}
    results, warm = {}, set()
    for size, count in parse_sizes(args.sizes, args.images):
        width, height = (int(v) for v in size.lower().split("x"))
        folder = image_folder(root, width, height, count, args.classes)
        for name, path in models.items():
            batch = args.batch_size or GPU_BATCH.get(name, 16)
            runs = {method: [] for method in METHODS}
            if name not in warm:  # first-call costs (kernels, autotuning, caches), once per model, not counted
                run_epoch(folder, path, "smile", batch, args.device, os.path.join(root, "run"))
                warm.add(name)
            for repeat in range(args.repeats):
                for method in METHODS if repeat % 2 == 0 else METHODS[::-1]:
                    result = run_epoch(folder, path, method, batch, args.device, os.path.join(root, "run"))
                    runs[method].append(result)
                    log(f"{size} {name} {method}: {result['train_s']:.2f} s, waiting {result['data_wait_fraction']:.0%}")
            results.setdefault(size, {})[name] = {"batch_size": batch, "images": count, "runs": runs}
            results[size][name]["summary"] = summarize(results[size][name])
            done(results)
    return results


def parse_sizes(text: str, default_count: int) -> list[tuple[str, int]]:
    """`"500x375,2400x1600:300"` -> `[("500x375", default_count), ("2400x1600", 300)]`."""
    sizes = []
    for item in text.split(","):
        size, _, count = item.partition(":")
        sizes.append((size.strip(), int(count) if count else default_count))
    return sizes


def summarize(cell: dict) -> dict:
    """Medians over the repeats of one (size, model): per method images/s and data-wait fraction; the paired ratio."""
    runs, summary = cell["runs"], {}
    for method, values in runs.items():
        summary[method] = {
            "train_s": statistics.median(r["train_s"] for r in values),
            "data_wait_fraction": statistics.median(r["data_wait_fraction"] for r in values),
            "images_per_s": statistics.median(r["images_per_s"] for r in values),
            "command_s": statistics.median(r["command_s"] for r in values),
            "steps": values[0]["steps"], "num_train": values[0]["num_train"],
        }
    ratios = [s["train_s"] / f["train_s"] for s, f in zip(runs["smile"], runs["finetune"])]
    summary["ratio"] = {"median": statistics.median(ratios), "values": ratios}
    return summary


def report(payload: dict) -> str:
    settings = payload["settings"]
    rows = []
    for size, by_model in payload["results"].items():
        for name, cell in by_model.items():
            s = cell["summary"]
            rows.append([
                size, str(cell["images"]), name, str(cell["batch_size"]),
                f"{s['finetune']['images_per_s']:.1f}", f"{s['smile']['images_per_s']:.1f}",
                f"{100 * s['finetune']['data_wait_fraction']:.0f} %", f"{100 * s['smile']['data_wait_fraction']:.0f} %",
                f"{s['ratio']['median']:.2f}", ", ".join(f"{r:.2f}" for r in s["ratio"]["values"]),
                f"{s['finetune']['command_s']:.1f} / {s['smile']['command_s']:.1f}",
            ])  # fmt: skip
    device, load = device_and_load(payload)
    return "\n".join([
        "# One epoch from JPEG files: stock fine-tuning against SMILE (run driver)", "",
        f"{device}; {'bf16 autocast' if settings['device'] == 'cuda' else 'fp32'}. Generated JPEGs (the `images` "
        f"column: how many of a size) in {settings['classes']} class folders, 15 % held out for the evaluation; the "
        f"run driver's default DataLoader settings ({settings['dataloader']}). {settings['repeats']} repeat(s), the "
        f"methods alternating. {load}", "",
        markdown_table(["image", "images", "model", "batch", "stock img/s", "SMILE img/s", "stock data wait",
                        "SMILE data wait", "SMILE / stock epoch", "per repeat", "whole run s (stock / SMILE)"], rows, "lrlrrrrrrrr"), "",
        "Data wait: the share of the training epoch's wall time the training loop spent between one optimizer step's "
        "end and the next one's start (fetching the next batch; on CUDA after synchronizing the step). Images/s: the "
        "training images over the epoch's wall time. The ratio is paired run by run; the median is shown. "
        "Whole run: the command's wall time (loading and checking every image before training, the epoch, the "
        "evaluation on the held-out 15 %, the results).", "",
        f"Targets (on a GPU, 500x375): SMILE / stock epoch <= {TARGET_RATIO}, data wait < {TARGET_WAIT:.0%} of SMILE's "
        "epoch.", *(line for note in payload.get("notes", []) for line in ("", note)),
    ])  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="500x375,2400x1600",
                        help="comma-separated WIDTHxHEIGHT of the JPEGs, each optionally :COUNT (default --images)")
    parser.add_argument("--images", type=int, default=None, help="JPEGs per size (default: 2000 on CUDA, 64 on the CPU)")
    parser.add_argument("--classes", type=int, default=4, help="class sub-folders")
    parser.add_argument("--batch_size", type=int, default=None, help="default: 128 ResNet-50, 64 ViT-B/16, 16 on the CPU")
    parser.add_argument("--repeats", type=int, default=2, help="epochs of each method (alternating)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "smile_hf_epoch"),
                        help="where the JPEGs, checkpoints and runs go (the JPEGs are reused)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1: on a shared "
                        "machine more threads wait on each other)")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report")
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "epoch.json"))
    parser.add_argument("--markdown", default=os.path.join(RESULTS_DIR, "epoch.md"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu.")
    args.images = args.images or (2000 if args.device == "cuda" else 64)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.makedirs(args.workdir, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    from smile_hf.run.arguments import has_accelerator

    loader = "one worker per core less one, persistent, pinned" if has_accelerator() else "0 workers: loading in the main process"
    payload = {
        "environment": environment(), "load": {"start": load_average()},
        "settings": {"device": args.device, "sizes": args.sizes, "images": args.images, "classes": args.classes,
                     "repeats": args.repeats, "dataloader": loader},
        "results": {}, "notes": args.note,
    }  # fmt: skip

    def done(results: dict) -> None:  # written after every (size, model): a time limit leaves what was measured
        payload["results"], payload["load"]["end"] = results, load_average()
        write_json(args.output, payload)
        write_text(args.markdown, report(payload))

    benchmark(args, args.workdir, done)
    payload["load"]["end"] = load_average()
    publish(report(payload), payload, args.output, args.markdown)
    return payload


if __name__ == "__main__":
    main()
