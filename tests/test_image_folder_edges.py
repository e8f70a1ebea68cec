"""What a user's own image folders can get wrong without an undecodable file: an empty class folder, and the
validation folder being the training folder (all offline)."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
from PIL import Image

from smile_hf.data import DataError, empty_class_folders, prepare_datasets
from smile_hf.model_card import TrainingResults, build_model_card
from smile_hf.run.outputs import card_arguments

pytestmark = pytest.mark.cpu_only("image folders are read on the CPU")


def write_folder(root, counts: dict[str, int]) -> str:
    """`root/<class>/<i>.png` for each class and count (a count of 0: an empty class folder)."""
    for name, count in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(count):
            Image.new("L", (4, 4), 30 * i).save(root / name / f"{i}.png")
    return str(root)


def test_an_empty_training_class_folder_is_refused_naming_it(tmp_path):
    """4 class folders, one empty: the model would silently get 3 classes; refused, naming the folder."""
    train = write_folder(tmp_path / "train", {"ant": 2, "bee": 2, "cat": 0, "dog": 2})
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    assert empty_class_folders(train) == ["cat"]
    with pytest.raises(DataError) as raised:
        prepare_datasets(train_dir=train)
    message = str(raised.value)
    assert message == (
        f"--train_dir '{train}' has 1 class folder(s) with no image: ['cat']; the model would get 3 classes, not 4: "
        "add images to them, or remove them."
    )


def test_hidden_folders_are_no_class_folders(tmp_path):
    """`datasets` reads no hidden folder (`.ipynb_checkpoints`, `__MACOSX`), so they are no empty classes either."""
    train = write_folder(tmp_path / "train", {"ant": 2, "bee": 2, ".ipynb_checkpoints": 0, "__MACOSX": 0})
    assert empty_class_folders(train) == []
    assert prepare_datasets(train_dir=train, train_val_split=0.5).label_names == ["ant", "bee"]


def test_an_empty_validation_class_folder_is_named_in_a_warning(tmp_path, caplog):
    """A validation class folder with no image leaves the model's classes as they are: the class is only not
    evaluated, which a warning says, naming it."""
    train = write_folder(tmp_path / "train", {"ant": 2, "bee": 2, "cat": 2})
    val = write_folder(tmp_path / "val", {"ant": 1, "bee": 1, "cat": 0})
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        data = prepare_datasets(train_dir=train, validation_dir=val)
    assert data.label_names == ["ant", "bee", "cat"] and len(data.eval) == 2
    assert f"--validation_dir '{val}' has 1 class folder(s) with no image, not evaluated: ['cat']." in caplog.text


@pytest.mark.parametrize("same", ["same path", "trailing slash", "symlink"])
def test_validation_equal_to_training_is_warned_about_and_the_card_says_so(tmp_path, caplog, same):
    train = write_folder(tmp_path / "train", {"ant": 2, "bee": 2})
    validation = {"same path": train, "trailing slash": train + os.sep, "symlink": str(tmp_path / "link")}[same]
    if same == "symlink":
        os.symlink(train, validation)
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        data = prepare_datasets(train_dir=train, validation_dir=validation)
    assert len(data.eval) == len(data.train) == 4
    assert f"--validation_dir is --train_dir ({validation}): the validation accuracy is measured on the training images" in caplog.text
    card = card_arguments(SimpleNamespace(model_name_or_path="m", license="mit"), SimpleNamespace(method="finetune"),
                          data, from_scratch=False)  # fmt: skip
    text = build_model_card(
        model_name="m", method="finetune", dataset_name=card["dataset"], dataset_split=card["dataset_split"],
        dataset_split_role=card["dataset_split_role"], local_dataset=True,
        results=TrainingResults(eval_metrics={"accuracy": 0.5}),
    ).text  # fmt: skip
    assert "evaluated on its `validation` split: the training images themselves: --validation_dir is --train_dir, so " \
        "this is training accuracy, not a held-out estimate (not the official split)." in text
    assert "a separate image folder" not in text


def test_a_separate_validation_folder_is_still_called_one(tmp_path, caplog):
    train = write_folder(tmp_path / "train", {"ant": 2, "bee": 2})
    val = write_folder(tmp_path / "val", {"ant": 1, "bee": 1})
    with caplog.at_level(logging.WARNING, logger="smile_hf"):
        data = prepare_datasets(train_dir=train, validation_dir=val)
    assert data.source.eval_split_role == "a separate image folder" and "--validation_dir is" not in caplog.text


def test_local_folders_print_no_download_bar(tmp_path, capfd):
    """`datasets` shows a "Downloading data" bar over 16 or more local files: nothing is downloaded, so none is shown
    (and its progress bars are as they were afterwards)."""
    from datasets.utils import are_progress_bars_disabled

    train = write_folder(tmp_path / "train", {"ant": 10, "bee": 10})
    before = are_progress_bars_disabled()
    prepare_datasets(train_dir=train, train_val_split=0.5, cache_dir=str(tmp_path / "cache"), disable_tqdm=True)
    assert "Downloading" not in capfd.readouterr().err
    assert are_progress_bars_disabled() == before
