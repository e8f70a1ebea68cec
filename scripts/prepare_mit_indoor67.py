# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Lay out MIT Indoor-67 with its official split as image folders for `--train_dir` / `--validation_dir`.

The benchmark split of Quattoni & Torralba (CVPR 2009) is 80 training and 20 test images per class (5,360 / 1,340
images, 67 classes), listed in `TrainImages.txt` and `TestImages.txt`; the images come in `indoorCVPR_09.tar`
(`Images/<class>/<file>`). All three are on https://web.mit.edu/torralba/www/indoor.html. The `mit_indoor67`
preset reads a Hub copy with another split (Roboflow's); this script gives the official one:

    python scripts/prepare_mit_indoor67.py --images indoorCVPR_09.tar --train_list TrainImages.txt \\
        --test_list TestImages.txt --output_dir data/mit_indoor67
    python examples/run_smile.py --train_dir data/mit_indoor67/train --validation_dir data/mit_indoor67/test \\
        --method smile --reference_recipe True

`--images` is the tarball or the folder it was extracted into (the one holding `Images/`). Writes
`<output_dir>/train/<class>/<file>` and `<output_dir>/test/<class>/<file>`, exactly the listed images, and
`<output_dir>/smile_hf_split.json`, which tells the run (its results and model card) that the folders are the
official split; it reports the counts. A missing file, a listed image that is not in the archive, an image listed in both splits or a non-empty
output folder is one error line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import BinaryIO

from smile_hf.data.prepare import SPLIT_INFO_NAME

OFFICIAL_COUNTS = {"train": 5360, "test": 1340, "classes": 67}
"""What the official lists hold (80 + 20 images of each of the 67 classes)."""
IMAGES_FOLDER = "Images"


class PrepareError(ValueError):
    """Input that cannot give the official layout (reported as one line)."""


# ---------------------------------------------------------------------------------------------------------------------
# The official lists
# ---------------------------------------------------------------------------------------------------------------------


def is_entry(entry: str) -> bool:
    """Whether a list line is `<class>/<file>` (no absolute path, no `..`)."""
    parts = PurePosixPath(entry).parts
    return len(parts) == 2 and ".." not in parts and not entry.startswith("/")


def read_list(path: str) -> list[str]:
    """The entries of `TrainImages.txt` / `TestImages.txt`: one `<class>/<file>` per line, relative to `Images/`."""
    if not os.path.isfile(path):
        raise PrepareError(f"List file '{path}' not found (TrainImages.txt / TestImages.txt from the dataset's page).")
    with open(path, encoding="utf-8") as f:
        entries = [line.strip().replace("\\", "/") for line in f if line.strip()]
    bad = [entry for entry in entries if not is_entry(entry)]
    if bad or not entries:
        example = bad[:3] or "nothing"
        raise PrepareError(f"'{path}' is not a list of <class>/<file> lines (e.g. kitchen/int474.jpg); got {example}.")
    return entries


def check_lists(train: list[str], test: list[str]) -> None:
    """A [`PrepareError`] if an image is listed twice or in both splits."""
    for name, entries in (("train", train), ("test", test)):
        repeated = [e for e, n in Counter(entries).items() if n > 1]
        if repeated:
            raise PrepareError(f"The {name} list names {len(repeated)} image(s) twice, e.g. {repeated[0]}.")
    both = sorted(set(train) & set(test))
    if both:
        raise PrepareError(f"{len(both)} image(s) are listed in both the train and the test list, e.g. {both[0]}.")


# ---------------------------------------------------------------------------------------------------------------------
# The images: the tarball or its extracted folder
# ---------------------------------------------------------------------------------------------------------------------


Opener = Callable[[], BinaryIO]
"""Opens one image as a binary file."""


def relative_to_images(name: str) -> str | None:
    """`<class>/<file>` of an archive path `.../Images/<class>/<file>`, else `None`."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    last = max((i for i, part in enumerate(parts) if part == IMAGES_FOLDER), default=None)
    return "/".join(parts[last + 1 :]) if last is not None and len(parts) - last == 3 else None


@contextmanager
def open_images(images: str) -> Iterator[dict[str, Opener]]:
    """`<class>/<file>` -> an [`Opener`] of that image, from the tarball `images` (read in place, not extracted)
    or the folder `images` (the one holding `Images/`, or `Images/` itself)."""
    if not os.path.exists(images):
        raise PrepareError(f"--images '{images}' not found (indoorCVPR_09.tar from the dataset's page).")
    if os.path.isfile(images):
        if not tarfile.is_tarfile(images):
            raise PrepareError(f"--images '{images}' is not a tar archive (expected indoorCVPR_09.tar).")
        with tarfile.open(images) as tar:
            members = {relative_to_images(m.name): m for m in tar.getmembers() if m.isfile()}
            yield {key: (lambda m=m: tar.extractfile(m)) for key, m in members.items() if key}
        return
    yield folder_images(images)


def folder_images(images: str) -> dict[str, Opener]:
    """[`open_images`] of an extracted archive: `images` holds `Images/<class>/<file>` (or is `Images/`)."""
    is_root = os.path.basename(os.path.normpath(images)) == IMAGES_FOLDER
    root = images if is_root else os.path.join(images, IMAGES_FOLDER)
    if not os.path.isdir(root):
        raise PrepareError(f"--images '{images}' has no '{IMAGES_FOLDER}' folder (expected Images/<class>/<file>).")
    classes = [c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c))]
    files = {f"{c}/{f}": os.path.join(root, c, f) for c in classes for f in os.listdir(os.path.join(root, c))}
    return {key: (lambda path=path: open(path, "rb")) for key, path in files.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------------------


def check_output_dir(output_dir: str) -> None:
    """A [`PrepareError`] unless `output_dir` is new or empty (nothing is overwritten or mixed in)."""
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise PrepareError(f"--output_dir '{output_dir}' is not empty: pass an empty or new folder.")


def copy_image(source: BinaryIO, target: str) -> None:
    """Write the open image `source` to the file `target` (creating its folder), then close `source`."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)


def prepare(images: str, train_list: str, test_list: str, output_dir: str) -> dict[str, int]:
    """Copy the images of the official lists into `output_dir/{train,test}/<class>/<file>`; return the counts
    (`train`, `test` images, `classes`)."""
    splits = {"train": read_list(train_list), "test": read_list(test_list)}
    check_lists(splits["train"], splits["test"])
    check_output_dir(output_dir)
    with open_images(images) as available:
        missing = [e for entries in splits.values() for e in entries if e not in available]
        if missing:
            raise PrepareError(f"{len(missing)} listed image(s) are not in --images '{images}', e.g. {missing[0]}.")
        for split, entries in splits.items():
            for entry in entries:
                copy_image(available[entry](), os.path.join(output_dir, split, *entry.split("/")))
    classes = {e.split("/")[0] for entries in splits.values() for e in entries}
    write_split_info(output_dir)
    return {"train": len(splits["train"]), "test": len(splits["test"]), "classes": len(classes)}


def write_split_info(output_dir: str) -> None:
    """Say beside the folders that they are the official split, for the results and the model card of a run on
    them (read by `smile_hf.data.prepare.local_data_source`)."""
    info = {
        "name": "MIT Indoor-67", "train_dir": "train", "validation_dir": "test", "official_split": True,
        "eval_split_role": "the official test split (TestImages.txt)",
    }  # fmt: skip
    with open(os.path.join(output_dir, SPLIT_INFO_NAME), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


def summary(counts: dict[str, int], output_dir: str) -> str:
    """What was written, and whether it is the official split's size."""
    line = f"{counts['train']} train / {counts['test']} test images of {counts['classes']} classes in {output_dir}"
    if counts == OFFICIAL_COUNTS:
        return line + " (the official split's sizes)."
    return line + f"; the official lists hold {OFFICIAL_COUNTS['train']} / {OFFICIAL_COUNTS['test']} of 67 classes."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="indoorCVPR_09.tar, or the folder holding its Images/.")
    parser.add_argument("--train_list", required=True, help="TrainImages.txt (80 images per class).")
    parser.add_argument("--test_list", required=True, help="TestImages.txt (20 images per class).")
    parser.add_argument("--output_dir", default="data/mit_indoor67", help="Where train/ and test/ are written.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    try:
        counts = prepare(args.images, args.train_list, args.test_list, args.output_dir)
    except PrepareError as error:
        print(f"prepare_mit_indoor67.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(summary(counts, args.output_dir))
    return counts


if __name__ == "__main__":
    main()
