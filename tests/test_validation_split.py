"""The validation split held out of the training data (`smile_hf.data.validation`): stratified counts, seeded
draws, no overlap with the training subset, and through the run driver's data loading."""

from __future__ import annotations

import io

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from PIL import Image

from smile_hf.data import INDEX_COLUMN, DataError, ImageTransform, carve_validation, held_out_counts
from smile_hf.run import parse_args, prepare_data


def labelled(sizes: list[int]) -> Dataset:
    """A dataset with `sizes[c]` examples of class c, interleaved, and an id per example."""
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    order = np.random.default_rng(0).permutation(len(labels))
    features = Features({"id": Value("int64"), "label": ClassLabel(num_classes=len(sizes))})
    return Dataset.from_dict({"id": list(range(len(labels))), "label": [labels[i] for i in order]}, features=features)


def per_class(dataset: Dataset, num_classes: int) -> list[int]:
    return np.bincount(dataset["label"], minlength=num_classes).tolist()


@pytest.mark.parametrize(
    "sizes, fraction, samples, expected",
    [
        ([5, 10, 20], None, None, [1, 2, 4]),  # default 0.2: round(0.2 n), at least 1
        ([5, 10, 20], 0.5, None, [2, 5, 10]),  # round half to even: 2.5 -> 2
        ([3, 3, 3], None, None, [1, 1, 1]),  # few-shot: 0.6 rounds to 1
        ([2, 4, 30], None, 3, [1, 3, 3]),  # per class, leaving one of each class to train on
    ],
)
def test_the_split_is_stratified_with_the_stated_counts(sizes, fraction, samples, expected):
    train, validation, split = carve_validation(labelled(sizes), "label", 0, fraction, samples)
    assert per_class(validation, len(sizes)) == expected
    assert per_class(train, len(sizes)) == [n - k for n, k in zip(sizes, expected)]
    assert (split.examples, split.train_examples) == (sum(expected), sum(sizes) - sum(expected))
    assert (split.min_per_class, split.max_per_class) == (min(expected), max(expected))
    assert f"{sum(expected)} images held out" in split.describe()


def test_the_split_is_seeded_and_never_overlaps_the_training_data():
    data = labelled([6, 8, 10])
    ids = lambda dataset: list(dataset["id"])  # noqa: E731
    train, validation, _ = carve_validation(data, "label", seed=3)
    again_train, again_validation, _ = carve_validation(data, "label", seed=3)
    _, other_validation, _ = carve_validation(data, "label", seed=4)
    assert ids(validation) == ids(again_validation) and ids(train) == ids(again_train)
    assert ids(validation) != ids(other_validation)  # another seed draws other examples
    assert set(ids(train)).isdisjoint(ids(validation))
    assert sorted(ids(train) + ids(validation)) == list(range(len(data)))
    position = {example: i for i, example in enumerate(ids(data))}
    assert [position[i] for i in ids(train)] == sorted(position[i] for i in ids(train))  # original order kept


def test_bad_requests_get_one_line_errors():
    with pytest.raises(DataError, match="not both"):
        held_out_counts(np.array([4, 4]), 0.2, 1)
    with pytest.raises(DataError, match=r"--validation_split_fraction must be in \(0, 1\)"):
        held_out_counts(np.array([4, 4]), 1.0, None)
    with pytest.raises(DataError, match="--validation_samples_per_class must be >= 1"):
        held_out_counts(np.array([4, 4]), None, 0)
    with pytest.raises(DataError, match="at least 2 training examples of every class"):
        held_out_counts(np.array([4, 1]), None, None)


def test_a_class_of_one_training_image_is_named():
    """Calibration and the search hold images out of every class: the classes with a single image are named."""
    names = ["ant", "bee", "cat", "dog"]
    data = labelled([3, 1, 4, 1]).cast_column("label", ClassLabel(names=names))
    with pytest.raises(DataError) as raised:
        carve_validation(data, "label", seed=0)
    assert "2 class(es) have 1: ['bee', 'dog']; add training images of them" in str(raised.value)
    with pytest.raises(DataError, match=r"1 class\(es\) have 1: \['1'\];"):
        held_out_counts(np.array([4, 1]), None, None)  # no names: the class ids


def test_the_run_holds_the_split_out_of_its_few_shot_training_subset():
    argv = ["--dataset", "digits", "--train_samples_per_class", "4", "--max_eval_samples", "30",
            "--validation_samples_per_class", "1", "--report_to", "none"]  # fmt: skip
    model_args, data_args, training_args = parse_args(argv)
    plain = prepare_data(data_args, model_args, 0, None)
    data = prepare_data(data_args, model_args, 0, None, validation=True)
    assert plain.validation is None and plain.validation_split is None
    raw = lambda dataset, column=INDEX_COLUMN: list(dataset.with_format(None)[column])  # noqa: E731 (no transform)
    # the training subset of a plain run, split in two: 1 image of each class held out, 3 left
    train_ids, validation_ids = set(raw(data.train)), set(raw(data.validation))
    assert train_ids.isdisjoint(validation_ids) and train_ids | validation_ids == set(raw(plain.train))
    assert np.bincount(raw(data.validation, "label")).tolist() == [1] * 10
    assert len(data.train) == 30 and data.validation_split.describe().startswith("10 images held out")
    assert raw(data.eval) == raw(plain.eval)  # the evaluation split is untouched
    # the validation images get the evaluation transform (center crop; a random crop would differ), computed here
    image = Image.open(io.BytesIO(data.validation.with_format(None)[0][data.image_column]["bytes"]))
    expected = ImageTransform(data.transform_config, train=False)(image)
    assert data.validation[0]["pixel_values"].equal(expected)
