# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Where the data come from: the dataset presets of `--dataset` ([`DatasetPreset`], [`DATASET_PRESETS`], the
offline `digits` builder) and their loading from the Hub, and `--train_dir` / `--validation_dir` image folders."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets
from datasets import Image as ImageFeature
from PIL import Image

from ..recipes import (
    CUB_RECIPE,
    DEMO_RECIPE,
    FGVC_AIRCRAFT_RECIPE,
    STANFORD_CARS_RECIPE,
    STOCK_RECIPE,
    UNTUNED_RECIPE,
    Recipe,
    paper_recipe,
)
from .errors import DataError, one_line
from .offline_text import build_debian_sections

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Dataset presets
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class DataSource:
    """Where a run's data came from, as written into the results and the model card: never a local path.

    Attributes:
        name (`str`): readable name (a preset's title, or the folder name of local images).
        hub_id (`str`, *optional*): the Hub dataset id; `None` for local or built-in data.
        config (`str`, *optional*), revision (`str`, *optional*): the Hub configuration and revision loaded
            (the revision is the resolved commit when `datasets` reports it, else the one asked for; `None`: latest).
        train_split (`str`), eval_split (`str`): the splits trained and evaluated on, as named by the source.
        eval_split_role (`str`): what the eval split is (e.g. "the official test split", "15% held out of train").
        official_split (`bool`): whether the split is the benchmark's official one.
        local (`bool`): local files (`--train_dir`), not on the Hub.
        notes (`str`): anything else the reader must know.
        eval_examples (`int`, *optional*): the images evaluated on, after `--max_eval_samples`.
        eval_split_examples (`int`, *optional*): the images of the evaluation split they were drawn from.
        train_samples_per_class (`int`, *optional*): the training images per class of a few-shot subset.
    """

    name: str
    hub_id: str | None = None
    config: str | None = None
    revision: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    eval_split_role: str = ""
    official_split: bool = True
    local: bool = False
    notes: str = ""
    eval_examples: int | None = None
    eval_split_examples: int | None = None
    train_samples_per_class: int | None = None

    def sample_counts(self) -> dict[str, int | None]:
        """The counts a model card states ([`smile_hf.model_card.build_model_card`]'s keywords of the same names)."""
        return {"eval_examples": self.eval_examples, "eval_split_examples": self.eval_split_examples,
                "train_samples_per_class": self.train_samples_per_class}  # fmt: skip


def resolved_revision(dataset: Dataset, asked: str | None = None) -> str | None:
    """The commit of the Hub repository `dataset` was read from, when `datasets` recorded the files' URLs with it
    (`hf://datasets/<id>@<sha>/...`), else `asked`."""
    info = getattr(dataset, "info", None)
    for url in (getattr(info, "download_checksums", None) or {}):
        match = re.search(r"@([0-9a-f]{40})/", str(url))
        if match:
            return match.group(1)
    return asked


@dataclass(frozen=True)
class DatasetPreset:
    """Where a benchmark dataset lives on the Hub and how it is laid out.

    Args:
        name (`str`): the value of `--dataset`.
        hub_id (`str` or `None`): the Hub dataset id (`owner/name`); `None` for a dataset built offline by `builder`.
        train_split (`str`): split (or `+`-joined splits) to train on.
        eval_split (`str`): split to evaluate on.
        num_labels (`int`): number of classes of the benchmark, checked against the data when it is loaded.
        image_column (`str`): column holding the images.
        label_column (`str`): column holding the class labels.
        config_name (`str`, *optional*): dataset configuration (subset) on the Hub.
        data_dir (`str`, *optional*): folder of the Hub repository that holds the data files.
        revision (`str`, *optional*): branch, tag or commit of the Hub repository.
        homepage (`str`): where the original dataset is described.
        notes (`str`): what differs from the benchmark's usual protocol, if anything.
        title (`str`): the dataset's readable name (model cards, results).
        eval_split_role (`str`): what the eval split is in the benchmark's protocol (e.g. Food-101's Hub
            `validation` split is the official test split).
        official_split (`bool`): whether the train / eval split is the benchmark's official one.
        builder (`Callable`, *optional*): builds the dataset locally (offline datasets); gets the preset.
        recipe (`Recipe`, *optional*): the training recipe `smile-hf train --dataset NAME` uses where no option says
            otherwise ([`smile_hf.recipes`]).
        validation_split (`str`, *optional*): the dataset's own validation split, distinct from `eval_split`: what a
            hyperparameter search and calibration validate on (`--validation_source`; the search's trials then train
            on `train_split` without it). `None`: the dataset has none, a validation split is carved from training.
        text_columns (`tuple[str, ...]`): a text-classification dataset's text column, or its pair of columns
            (tokenized as a pair); empty for an image dataset ([`smile_hf.data.text`]).
    """

    name: str
    hub_id: str | None
    train_split: str
    eval_split: str
    num_labels: int
    image_column: str = "image"
    label_column: str = "label"
    config_name: str | None = None
    data_dir: str | None = None
    revision: str | None = None
    homepage: str = ""
    notes: str = ""
    title: str = ""
    eval_split_role: str = "the official test split"
    official_split: bool = True
    builder: Callable[[DatasetPreset], DatasetDict] | None = field(default=None, compare=False, repr=False)
    recipe: Recipe | None = field(default=None, compare=False, repr=False)
    validation_split: str | None = None
    text_columns: tuple[str, ...] = ()

    @property
    def is_text(self) -> bool:
        """Whether the preset is a text-classification dataset (it names `text_columns`), not an image one."""
        return bool(self.text_columns)

    def source(self) -> DataSource:
        """What a model card and the results say about this preset's data."""
        return DataSource(
            name=self.title or self.name, hub_id=self.hub_id, config=self.config_name, revision=self.revision,
            train_split=self.train_split, eval_split=self.eval_split, eval_split_role=self.eval_split_role,
            official_split=self.official_split, notes=self.notes,
        )  # fmt: skip

    def split_names(self) -> set[str]:
        """Every split name the preset uses."""
        splits = (self.train_split, self.eval_split, self.validation_split or "")
        return {s.strip() for split in splits for s in split.split("+") if s.strip()}

    def train_parts(self, without_validation: bool = False) -> list[str]:
        """The splits `train_split` joins, in order; `without_validation` leaves out `validation_split`."""
        parts = [s.strip() for s in self.train_split.split("+")]
        return [s for s in parts if not (without_validation and s == self.validation_split)]


def build_digits(preset: DatasetPreset, test_fraction: float = 0.5, seed: int = 0) -> DatasetDict:
    """scikit-learn's `load_digits` (1797 grayscale 8 x 8 digits, ink 0-16) as a `DatasetDict` of PIL images.

    The train / test split is fixed (stratified, seed 0) so that every run evaluates on the same images; few-shot
    subsets are then drawn from `train` with the run's seed (`--train_samples_per_class`).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataError(
            "--dataset digits needs scikit-learn, which ships the images: pip install scikit-learn."
        ) from error

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [Image.fromarray(p, mode="L") for p in pixels]
    names = [str(i) for i in range(preset.num_labels)]
    dataset = Dataset.from_dict({preset.image_column: images, preset.label_column: digits.target.tolist()})
    dataset = dataset.cast_column(preset.image_column, ImageFeature())
    dataset = dataset.cast_column(preset.label_column, ClassLabel(names=names))
    splits = dataset.train_test_split(test_size=test_fraction, stratify_by_column=preset.label_column, seed=seed)
    return DatasetDict({preset.train_split: splits["train"], preset.eval_split: splits["test"]})


TEXT_PRESETS: tuple[DatasetPreset, ...] = (
    DatasetPreset(
        "sst2", "stanfordnlp/sst2", "train", "validation", 2, recipe=STOCK_RECIPE, text_columns=("sentence",),
        title="SST-2", homepage="https://nlp.stanford.edu/sentiment/",
        eval_split_role="GLUE's validation split (872 sentences; the test split has no labels)", official_split=False,
        notes="Binary sentiment of movie-review sentences (GLUE); evaluates on the validation split, as GLUE reports.",
    ),
    DatasetPreset(
        "imdb", "stanfordnlp/imdb", "train", "test", 2, recipe=STOCK_RECIPE, text_columns=("text",),
        revision="e6281661ce1c48d982bc483cf8a173c1bbeb5d31", config_name="plain_text",
        title="IMDB", homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
        notes="Official train / test split (25,000 / 25,000 reviews); the unlabelled split is not used.",
    ),
    DatasetPreset(
        "ag_news", "fancyzhx/ag_news", "train", "test", 4, recipe=STOCK_RECIPE, text_columns=("text",),
        title="AG News", homepage="https://huggingface.co/datasets/fancyzhx/ag_news",
        notes="Official train / test split (120,000 / 7,600 articles), 4 topics.",
    ),
    DatasetPreset(
        "emotion", "dair-ai/emotion", "train", "test", 6, recipe=STOCK_RECIPE, text_columns=("text",), config_name="split",
        title="Emotion", homepage="https://github.com/dair-ai/emotion_dataset",
        notes="Official train / validation / test split (16,000 / 2,000 / 2,000 tweets), 6 emotions; trains on "
        "train (a search or calibration carves its validation split from it).",
    ),
    DatasetPreset(
        "banking77", "legacy-datasets/banking77", "train", "test", 77, recipe=STOCK_RECIPE, text_columns=("text",),
        revision="f54121560de48f2852f90be299010d1d6dc612ec",
        title="Banking77", homepage="https://github.com/PolyAI-LDN/task-specific-datasets",
        notes="Official train / test split (10,003 / 3,080 queries), 77 intents; the Parquet copy of PolyAI/banking77 "
        "(whose loading script `datasets` no longer runs).",
    ),
    DatasetPreset(
        "trec", "CogComp/trec", "train", "test", 6, recipe=STOCK_RECIPE, text_columns=("text",), label_column="coarse_label",
        revision="refs/convert/parquet",
        title="TREC", homepage="https://cogcomp.seas.upenn.edu/Data/QA/QC/",
        notes="Official train / test split (5,452 / 500 questions), the 6 coarse classes (--label_column fine_label: "
        "the 50 fine ones); read from the Hub's Parquet conversion of the repository's loading script.",
    ),
    DatasetPreset(
        "debian_sections", None, "train", "test", 6, recipe=STOCK_RECIPE, text_columns=("text",), label_column="section",
        title="Debian package descriptions (6 sections)",
        homepage="https://www.debian.org/distrib/packages",
        eval_split_role="a fixed test file (50 descriptions per section)", official_split=False,
        notes="Offline: data/debian-descriptions in the repository (Debian 12 package descriptions labelled by archive "
        "section: games, sound, graphics, mail, database, math; 30 training / 50 test descriptions per section).",
        builder=build_debian_sections,
    ),
)
"""The text-classification presets (`text_columns` set). Revisions: IMDB and Banking77 are pinned to commits of their
Parquet repositories used by name in third-party code; TREC reads the Hub's Parquet conversion (its repository is a
loading script); SST-2, AG News and Emotion follow the repository's latest commit (no commit of theirs could be
checked here). When a preset is loaded, its splits, columns and number of classes are checked, and a drift is one
[`DataError`]."""


DATASET_PRESETS: dict[str, DatasetPreset] = {
    preset.name: preset
    for preset in (
        DatasetPreset(
            "food101", "ethz/food101", "train", "validation", 101,
            title="Food-101", homepage="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
            eval_split_role="the official test split (250 images per class), named 'validation' on the Hub",
            notes="The Hub's 'validation' split is the official test split (250 images per class).",
            recipe=paper_recipe("Food-101", "paper-food101"),
        ),
        DatasetPreset(
            "cub200", "bentrevett/caltech-ucsd-birds-200-2011", "train", "test", 200,
            revision="1ef09e021b0b65b40337f6f285909656f407f6e0",
            title="CUB-200-2011", homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
            notes="Official train / test split (5994 / 5794 images), species labels; the bbox column is not used.",
            recipe=CUB_RECIPE,
        ),
        DatasetPreset(
            "stanford_cars", "tanganke/stanford_cars", "train", "test", 196,
            title="Stanford Cars", homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
            notes="Official train / test split (8144 / 8041 images).",
            recipe=STANFORD_CARS_RECIPE,
        ),
        DatasetPreset(
            "fgvc_aircraft", "HuggingFaceM4/FGVC-Aircraft", "train+validation", "test", 100,
            label_column="variant", revision="e18a7c97147c90dc7f4a60d74a7f4258e9264e97",
            title="FGVC-Aircraft", homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
            notes="Variant level (100 classes); trains on trainval, evaluates on test, as the reference. Pinned to "
            "the repository's Parquet commit (data/{train,validation,test}-*.parquet; its loading script deleted).",
            recipe=FGVC_AIRCRAFT_RECIPE, validation_split="validation",
        ),
        DatasetPreset(
            "mit_indoor67", "keremberke/indoor-scene-classification", "train", "test", 67,
            label_column="labels", data_dir="full", revision="refs/convert/parquet",
            title="MIT Indoor-67", homepage="https://web.mit.edu/torralba/www/indoor.html",
            official_split=False, eval_split_role="Roboflow's test split (not the official one)",
            notes="Roboflow's 70/20/10 split, not the official 80/20 one; read from the Hub's Parquet conversion. "
            "scripts/prepare_mit_indoor67.py lays out the official split for --train_dir / --validation_dir.",
            recipe=paper_recipe("MIT Indoor-67", "paper-mit_indoor67"),
        ),
        DatasetPreset(
            "flowers102", "dpdl-benchmark/oxford_flowers102", "train+validation", "test", 102,
            title="Oxford Flowers-102", homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
            notes="Official splits: trains on train + validation (2040 images), evaluates on test (6149).",
            recipe=UNTUNED_RECIPE, validation_split="validation",
        ),
        DatasetPreset(
            "oxford_pets", "timm/oxford-iiit-pet", "train", "test", 37,
            title="Oxford-IIIT Pet", homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
            notes="Official trainval / test split (3680 / 3669 images), breed labels.",
            recipe=UNTUNED_RECIPE,
        ),
        DatasetPreset(
            "cifar100", "uoft-cs/cifar100", "train", "test", 100,
            image_column="img", label_column="fine_label",
            title="CIFAR-100", homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            notes="Fine labels (100 classes), 32 x 32 images upsampled by the transforms.",
            recipe=UNTUNED_RECIPE,
        ),
        DatasetPreset(
            "dtd", "tanganke/dtd", "train", "test", 47,
            title="Describable Textures (DTD)", homepage="https://www.robots.ox.ac.uk/~vgg/data/dtd/",
            notes="Split 1: train + val (3760 images) / test (1880).",
            recipe=UNTUNED_RECIPE,
        ),
        DatasetPreset(
            "digits", None, "train", "test", 10,
            title="scikit-learn digits", homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            eval_split_role="a fixed stratified half of the data (seed 0)",
            notes="Offline: scikit-learn's digits, fixed stratified 50/50 split; the demo trains few-shot.",
            builder=build_digits, recipe=DEMO_RECIPE,
        ),
        *TEXT_PRESETS,
    )
}  # fmt: skip
"""The datasets `--dataset` knows.

Hub ids and split names were checked against the datasets' Hub cards; column names too where the card lists its
features (cifar100, cub200, dtd, flowers102, oxford_pets, mit_indoor67; fgvc_aircraft's `variant` as used by MTEB).
They could not be loaded here (no network): when a preset is loaded, its splits, columns and number of classes are
checked, and a drift is one [`DataError`] naming what was found (`--image_column` / `--label_column` override the
preset's); `tests/test_preset_schemas.py` loads a local Parquet copy of each declared schema.

- `cub200`: bentrevett/caltech-ucsd-birds-200-2011, pinned to the commit whose card was read (1ef09e0): Parquet
  `data/{train,test}-*`, features `image`, `label` (a class label of the 200 species, `001.Black_footed_Albatross`
  ...) and `bbox` (4 numbers); the viewer counts 5.99k / 5.79k rows. It is the copy uploaded first (March 2024);
  Donghyun99/CUB-200-2011, used before, holds Parquet files of the same four sizes uploaded in November 2024 (a
  re-upload, as far as can be told). Both are loaded by name in third-party code; no download counts could be read.
- `mit_indoor67`: the Hub repo is a loading script, which `datasets` >= 4 no longer runs: the preset reads the Hub's
  automatic Parquet conversion. Its split is Roboflow's, not the official one (no Hub copy of the official split
  was found); `scripts/prepare_mit_indoor67.py` builds the official one as image folders.
- `fgvc_aircraft`: the repository was converted to Parquet by its owners (commit 194f9ee, loading script deleted in
  e18a7c9, the pinned revision); its card lists `image`, `bbox` and `family` (70 classes). That `variant` is a class
  label comes from the former loading script as MTEB uses it (the label names of `features["variant"]`, 3,333 test
  images at revision 91860ad); its number of classes (100, or the 102 of the original README, which torchvision
  corrected to 100) could not be read off the Parquet card: if it differs, loading stops with the class count found.
"""


def get_preset(name: str) -> DatasetPreset:
    """The preset called `name`, or a [`DataError`] listing the known ones."""
    key = name.strip().lower()
    if key not in DATASET_PRESETS:
        raise DataError(f"Unknown --dataset '{name}'. Known datasets: {', '.join(sorted(DATASET_PRESETS))}.")
    return DATASET_PRESETS[key]


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


OWN_VALIDATION_KEY = "own_validation"
"""The key of the dataset's own validation split in what [`load_preset`] returns with `own_validation=True`."""


def load_preset(
    preset: DatasetPreset, cache_dir: str | None = None, token: str | bool | None = None, own_validation: bool = False
) -> DatasetDict:
    """Load a preset as a `DatasetDict` with its train split as `"train"` and its eval split as `"validation"`.

    `own_validation` (for a preset with a `validation_split`): `"train"` is then `train_split` without the validation
    split, and the validation split is [`OWN_VALIDATION_KEY`]."""
    if own_validation and preset.validation_split is None:
        raise DataError(f"--dataset {preset.name} has no validation split of its own: carve one from its training data")
    wanted = {"train": preset.train_parts(without_validation=own_validation), "validation": [preset.eval_split]}
    if own_validation:
        wanted[OWN_VALIDATION_KEY] = [preset.validation_split]
    if preset.builder is not None:
        splits = preset.builder(preset)
        joined = {key: [splits[n] for n in names] for key, names in wanted.items()}
        return DatasetDict({key: concatenate_datasets(parts) if len(parts) > 1 else parts[0]
                            for key, parts in joined.items()})  # fmt: skip
    from datasets import load_dataset

    kwargs = {"name": preset.config_name, "data_dir": preset.data_dir, "revision": preset.revision}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    loaded = {}
    for key, names in wanted.items():
        split = "+".join(names)
        try:
            loaded[key] = load_dataset(preset.hub_id, split=split, cache_dir=cache_dir, token=token, **kwargs)
        except Exception as error:  # network, missing split, auth: one clear line instead of a traceback
            raise DataError(
                f"Cannot load split '{split}' of dataset '{preset.hub_id}' (--dataset {preset.name}): {one_line(error)}"
            ) from error
    return DatasetDict(loaded)


def image_files(directory: str) -> list[str]:
    """Image files (any extension PIL can read) under `directory`, recursively, sorted."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    found = []
    for root, _, files in os.walk(directory):
        found.extend(os.path.join(root, f) for f in files if os.path.splitext(f)[1].lower() in extensions)
    return sorted(found)


def empty_class_folders(directory: str) -> list[str]:
    """The class folders of `directory` that hold no image file ([`image_files`]), by name; hidden folders
    (`.name`, `__name`), which `datasets` does not read either, are left out."""
    names = sorted(n for n in os.listdir(directory) if not n.startswith((".", "__")))
    return [n for n in names if os.path.isdir(os.path.join(directory, n)) and not image_files(os.path.join(directory, n))]


def check_image_folder(directory: str, flag: str, min_classes: int = 2, empty_classes: str = "error") -> None:
    """Raise a [`DataError`] unless `directory` exists and is laid out as `<dir>/<class>/<image>` with at least
    `min_classes` class folders holding images (and no image directly inside `directory`, nor in a folder inside a
    class folder). A class folder with no image ([`empty_class_folders`]) is a [`DataError`] naming it with
    `empty_classes="error"` (a training folder: the class would silently be no class of the model), a warning with
    `"warn"` (a validation folder: the class is only not evaluated)."""
    if not os.path.isdir(directory):
        raise DataError(f"{flag} '{directory}' does not exist or is not a directory.")
    layout = "expected one sub-folder per class with images inside (e.g. train/cat/001.jpg)"
    files = image_files(directory)
    if not files:
        raise DataError(f"{flag} '{directory}' contains no image files; {layout}.")
    loose = [f for f in files if os.path.dirname(f) == os.path.normpath(directory)]
    if loose:
        raise DataError(f"{flag} '{directory}' has {len(loose)} image(s) directly inside it (e.g. {loose[0]}); {layout}.")
    nested = [f for f in files if len(os.path.relpath(f, directory).split(os.sep)) > 2]
    if nested:
        raise DataError(
            f"{flag} '{directory}' has {len(nested)} image(s) in nested folders (e.g. {nested[0]}); {layout}, with no "
            "folder below the class folders: move the images up into their class folder."
        )
    classes = sorted({os.path.relpath(f, directory).split(os.sep)[0] for f in files})
    if len(classes) < min_classes:
        raise DataError(
            f"{flag} '{directory}' has images of {len(classes)} class folder(s) ({classes}); a classifier needs at least "
            f"{min_classes}: {layout}."
        )
    empty = empty_class_folders(directory)
    if empty and empty_classes == "error":
        raise DataError(
            f"{flag} '{directory}' has {len(empty)} class folder(s) with no image: {empty[:10]}; the model would get "
            f"{len(classes)} classes, not {len(classes) + len(empty)}: add images to them, or remove them."
        )
    if empty:
        logger.warning(f"{flag} '{directory}' has {len(empty)} class folder(s) with no image, not evaluated: {empty[:10]}.")


def load_image_folders(train_dir: str, validation_dir: str | None = None, cache_dir: str | None = None) -> DatasetDict:
    """Load `--train_dir` (and `--validation_dir`) laid out as `<dir>/<class name>/<image>` with `imagefolder`."""
    from datasets import load_dataset

    check_image_folder(train_dir, "--train_dir")
    data_files = {"train": os.path.join(train_dir, "**")}
    if validation_dir is not None:
        check_image_folder(validation_dir, "--validation_dir", min_classes=1, empty_classes="warn")
        data_files["validation"] = os.path.join(validation_dir, "**")
    try:
        with no_datasets_progress():  # its "Downloading data" bar over local files says what does not happen
            return load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    except Exception as error:
        raise DataError(f"Cannot read the image folders {sorted(data_files.values())}: {one_line(error)}") from error


@contextlib.contextmanager
def no_datasets_progress():
    """`datasets`' progress bars off inside the block (as they were after it)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
