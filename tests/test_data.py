"""Dataset presets, image conversion, torch-only transforms, subsets and data errors (all offline)."""

from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as ImageFeature
from PIL import Image

from smile_hf.data import (
    DATASET_PRESETS,
    INDEX_COLUMN,
    BatchTransform,
    DataError,
    ImageTransform,
    TransformConfig,
    center_crop,
    check_columns,
    check_label_range,
    collate,
    decode_image,
    encode_labels,
    find_corrupt_images,
    get_preset,
    handle_corrupt_images,
    lossy_conversion,
    pil_to_tensor,
    prepare_datasets,
    resize,
    sample_per_class,
    set_transforms,
    to_rgb,
    truncate,
    with_example_index,
    without_image_decoding,
)

pytestmark = pytest.mark.cpu_only("the data pipeline runs on the CPU, before the Trainer moves a batch to its device")

REQUIRED_PRESETS = {
    "food101", "cub200", "stanford_cars", "fgvc_aircraft", "mit_indoor67", "flowers102", "oxford_pets", "cifar100", "dtd",
}  # fmt: skip
SPLIT_NAME = re.compile(r"^(train|validation|test)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# ---- presets ------------------------------------------------------------------------------------------------------


def test_every_required_preset_exists():
    assert REQUIRED_PRESETS <= set(DATASET_PRESETS)


@pytest.mark.parametrize("name", sorted(DATASET_PRESETS))
def test_preset_metadata_is_complete_and_consistent(name):
    preset = DATASET_PRESETS[name]
    assert preset.name == name
    assert (preset.hub_id is None) == (preset.builder is not None), "a preset is either on the Hub or built locally"
    if preset.hub_id is not None:
        assert HUB_ID.match(preset.hub_id), preset.hub_id
    for split in (preset.train_split, preset.eval_split):
        assert all(SPLIT_NAME.match(part) for part in split.split("+")), split
    assert not set(preset.train_split.split("+")) & set(preset.eval_split.split("+")), "train and eval overlap"
    assert preset.num_labels >= 2
    assert preset.image_column and preset.label_column and preset.image_column != preset.label_column
    assert preset.homepage.startswith("https://")
    assert preset.notes


def test_known_column_layouts():
    assert (DATASET_PRESETS["cifar100"].image_column, DATASET_PRESETS["cifar100"].label_column) == ("img", "fine_label")
    assert DATASET_PRESETS["fgvc_aircraft"].label_column == "variant"
    assert DATASET_PRESETS["food101"].hub_id == "ethz/food101"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(DataError) as error:
        get_preset("imagenet")
    message = str(error.value)
    assert "imagenet" in message
    assert all(name in message for name in DATASET_PRESETS)


def test_digits_preset_is_offline_and_fixed():
    data = prepare_datasets(dataset="digits", seed=3)
    other = prepare_datasets(dataset="digits", seed=4)
    assert len(data.train) + len(data.eval) == 1797
    assert data.label_names == [str(i) for i in range(10)]
    assert data.eval[INDEX_COLUMN] == other.eval[INDEX_COLUMN]  # same eval set whatever the run's seed


# ---- image modes --------------------------------------------------------------------------------------------------


def test_grayscale_is_replicated():
    image = Image.fromarray(np.array([[0, 128], [255, 7]], dtype=np.uint8), mode="L")
    rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (2, 2, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == [[0, 128], [255, 7]]).all()


def test_alpha_is_dropped_as_pipeline_drops_it():
    # pipeline() converts with PIL's convert("RGB"): each pixel keeps the colour stored under it, whatever its alpha
    pixels = np.array([[[255, 0, 0, 255], [0, 0, 0, 0]], [[0, 0, 255, 128], [10, 20, 30, 0]]], dtype=np.uint8)
    rgba = Image.fromarray(pixels, mode="RGBA")
    assert np.asarray(to_rgb(rgba)).tolist() == pixels[..., :3].tolist()
    assert lossy_conversion(rgba) == "transparency"
    assert lossy_conversion(Image.fromarray(np.full((2, 2, 4), 255, dtype=np.uint8), mode="RGBA")) is None  # opaque
    la = Image.fromarray(np.array([[[7, 0], [200, 255]]], dtype=np.uint8), mode="LA")
    assert np.asarray(to_rgb(la)).tolist() == [[[7, 7, 7], [200, 200, 200]]]
    assert lossy_conversion(la) == "transparency"


def test_exif_orientation_is_applied():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8))  # 24 wide, 16 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    stored = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))  # the pixels as stored, 24 x 16
    upright = to_rgb(decode_image({"bytes": buffer.getvalue(), "path": None}))
    assert upright.size == (16, 24)
    assert np.asarray(upright).tolist() == np.rot90(stored, k=-1).tolist()  # 90 degrees clockwise
    assert to_rgb(upright).size == (16, 24)  # once upright, the orientation tag is gone: not rotated twice


def test_cmyk_is_converted():
    pixels = np.array([[[0, 0, 0, 0], [255, 0, 0, 0]]], dtype=np.uint8)  # white, pure cyan
    rgb = np.asarray(to_rgb(Image.fromarray(pixels, mode="CMYK")))
    assert rgb.tolist() == [[[255, 255, 255], [0, 255, 255]]]


def test_palette_images_are_expanded():
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putdata([0, 1])
    assert np.asarray(to_rgb(image)).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    assert lossy_conversion(image) is None
    image.info["transparency"] = 1  # colour 1 transparent: dropped, as PIL's convert("RGB") drops it
    assert np.asarray(to_rgb(image)).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    assert lossy_conversion(image) == "transparency"


def test_high_bit_depth_grayscale_is_clipped_not_rescaled():
    image = Image.fromarray(np.array([[0, 100, 300, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    assert np.asarray(to_rgb(image))[..., 0].tolist() == [[0, 100, 255, 255]]
    assert lossy_conversion(image) == "values outside 0..255"
    assert lossy_conversion(Image.fromarray(np.array([[0, 255]], dtype=np.uint16))) is None
    image = Image.fromarray(np.array([[-5, 7, 70000]], dtype=np.int32))
    assert image.mode == "I"
    assert np.asarray(to_rgb(image))[..., 0].tolist() == [[0, 7, 255]]
    image = Image.fromarray(np.array([[0.0, 0.5, 100.75, 300.0]], dtype=np.float32))
    assert image.mode == "F"
    assert np.asarray(to_rgb(image))[..., 0].tolist() == [[0, 0, 100, 255]]  # truncated, then clipped
    assert lossy_conversion(image) == "values outside 0..255"
    assert lossy_conversion(Image.fromarray(np.array([[0.0, 12.0]], dtype=np.float32))) is None


def test_lossy_images_are_named_in_one_warning_per_kind(caplog):
    clear = Image.fromarray(np.zeros((2, 2, 4), dtype=np.uint8), mode="RGBA")
    deep = Image.fromarray(np.full((2, 2), 4000, dtype=np.uint16))
    plain = Image.new("RGB", (2, 2))
    images = [{"bytes": png_bytes(i, "PNG"), "path": None} for i in (clear, plain, deep, clear)]
    dataset = image_dataset(images, [0, 1, 0, 1]).cast_column("image", ImageFeature())
    dataset = without_image_decoding(with_example_index(dataset), "image")
    with caplog.at_level(logging.WARNING, logger="smile_hf.data"):
        assert len(handle_corrupt_images(dataset, "image", "error", "train")) == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("2 image(s) of the train split have transparency (['example 0', 'example 3'])")
    assert lines[1].startswith("1 image(s) of the train split have values outside 0..255 (['example 2'])")


def test_pil_to_tensor_scales_to_unit_range():
    tensor = pil_to_tensor(Image.fromarray(np.array([[[255, 0, 51]]], dtype=np.uint8), mode="RGB"))
    assert tensor.shape == (3, 1, 1)
    torch.testing.assert_close(tensor.flatten(), torch.tensor([1.0, 0.0, 0.2]))


# ---- transforms ---------------------------------------------------------------------------------------------------


def test_resize_averages_when_halving():
    image = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    torch.testing.assert_close(resize(image, (1, 1)), torch.tensor([[[1.5]]]))


def test_center_crop_by_hand():
    image = torch.arange(36.0).view(1, 6, 6)
    torch.testing.assert_close(center_crop(image, (2, 4)), image[:, 2:4, 1:5])


def test_transform_config_from_processors():
    from transformers import ViTImageProcessor

    vit = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    config = TransformConfig.from_image_processor(vit)
    assert (config.crop_size, config.resize_size) == ((32, 32), (37, 37))  # 32 / (224/256) = 36.57
    assert config.mean == (0.5, 0.5, 0.5) and config.std == (0.25, 0.25, 0.25)
    convnext_like = SimpleNamespace(
        size={"shortest_edge": 224}, crop_pct=0.875, image_mean=[0.4] * 3, image_std=[0.2] * 3
    )
    assert TransformConfig.from_image_processor(convnext_like).resize_size == (256, 256)
    clip_like = SimpleNamespace(
        size={"shortest_edge": 256}, do_center_crop=True, crop_size={"height": 224, "width": 224},
        image_mean=[0.4] * 3, image_std=[0.2] * 3,
    )  # fmt: skip
    config = TransformConfig.from_image_processor(clip_like)
    assert (config.crop_size, config.resize_size) == ((224, 224), (256, 256))
    assert TransformConfig.from_image_processor(None).crop_size == (224, 224)


def test_eval_transform_of_a_constant_image():
    config = TransformConfig(crop_size=(4, 4), resize_size=(6, 6), mean=(0.5, 0.2, 0.0), std=(0.5, 0.4, 1.0))
    image = Image.new("RGB", (9, 7), (255, 51, 0))
    pixels = ImageTransform(config, train=False)(image)
    assert pixels.shape == (3, 4, 4)
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.2 - 0.2) / 0.4, 0.0]).view(3, 1, 1).expand(3, 4, 4)
    torch.testing.assert_close(pixels, expected)


def test_train_transform_is_a_random_window_of_the_resized_image():
    config = TransformConfig(crop_size=(3, 3), resize_size=(5, 5), mean=(0.0,) * 3, std=(1.0,) * 3)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (5, 5, 3), dtype=np.uint8))
    full = pil_to_tensor(image)  # resize 5 -> 5 is the identity
    windows = {(t, l): full[:, t : t + 3, l : l + 3] for t in range(3) for l in range(3)}
    transform = ImageTransform(config, train=True, generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(60):
        out = transform(image)
        matches = [
            (key, flipped) for key, w in windows.items() for flipped in (False, True)
            if torch.allclose(out, w.flip(-1) if flipped else w, atol=1e-6)
        ]  # fmt: skip
        assert matches, "the output is not a (flipped) crop of the resized image"
        seen.update(matches)
    assert {flipped for _, flipped in seen} == {False, True}
    assert len({key for key, _ in seen}) > 3
    no_flip = ImageTransform(TransformConfig((3, 3), (5, 5), (0.0,) * 3, (1.0,) * 3, False), train=True)
    for out in (no_flip(image) for _ in range(20)):
        assert any(torch.allclose(out, w, atol=1e-6) for w in windows.values())


# ---- datasets of images in odd modes, corrupt images ----------------------------------------------------------------


def odd_mode_images() -> list[Image.Image]:
    palette = Image.new("P", (5, 4))
    palette.putpalette(list(range(256)) * 3)
    return [
        Image.new("L", (5, 4), 100),
        Image.new("RGBA", (6, 4), (10, 20, 30, 40)),
        Image.new("CMYK", (4, 7), (0, 50, 100, 0)),
        palette,
        Image.new("1", (8, 8), 1),
        Image.new("RGB", (3, 3), (1, 2, 3)),
    ]


def image_dataset(values: list, labels: list[int]) -> Dataset:
    dataset = Dataset.from_dict({"image": values, "label": labels})
    return dataset.cast_column("label", ClassLabel(names=["a", "b", "c"]))


def test_batches_of_odd_modes():
    images = odd_mode_images()
    dataset = image_dataset(
        [{"bytes": png_bytes(i, "JPEG" if i.mode == "CMYK" else "PNG"), "path": None} for i in images],
        [0, 1, 2, 0, 1, 2],
    )
    dataset = dataset.cast_column("image", ImageFeature())
    dataset = without_image_decoding(with_example_index(dataset), "image")
    config = TransformConfig(crop_size=(8, 8), resize_size=(10, 10), mean=(0.5,) * 3, std=(0.5,) * 3)
    dataset.set_transform(BatchTransform(ImageTransform(config, train=True), "image", "label", "train"))
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["pixel_values"].shape == (6, 3, 8, 8)
    assert batch["labels"].tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.isfinite(batch["pixel_values"]).all()


def corrupt_dataset() -> Dataset:
    good = {"bytes": png_bytes(Image.new("RGB", (4, 4), (9, 9, 9))), "path": None}
    truncated = {"bytes": png_bytes(Image.new("RGB", (40, 40), (9, 9, 9)))[:60], "path": None}
    garbage = {"bytes": b"this is not an image", "path": None}
    dataset = image_dataset([good, truncated, good, garbage], [0, 1, 2, 0]).cast_column("image", ImageFeature())
    return without_image_decoding(with_example_index(dataset), "image")


def test_a_corrupt_image_is_reported_with_its_index():
    dataset = corrupt_dataset()
    config = TransformConfig(crop_size=(2, 2), resize_size=(4, 4))
    dataset.set_transform(BatchTransform(ImageTransform(config, train=False), "image", "label", "train"))
    assert dataset[0]["pixel_values"].shape == (3, 2, 2)
    with pytest.raises(DataError, match=r"example 1 of the train split.*--corrupt_images skip"):
        dataset[1]
    with pytest.raises(DataError, match="example 3 of the train split"):
        dataset[3]


def test_corrupt_images_are_skipped_on_request(caplog):
    dataset = corrupt_dataset().select([3, 2, 1, 0])  # the original indices survive reordering
    with caplog.at_level(logging.WARNING, logger="smile_hf.data"):
        kept = handle_corrupt_images(dataset, "image", "skip", "train")
    assert kept[INDEX_COLUMN] == [2, 0]
    assert find_corrupt_images(dataset, "image", chunk_size=3) == [0, 2]  # positions, across chunk boundaries
    assert "['example 3', 'example 1']" in caplog.text  # no file path in this dataset: its example indices
    with pytest.raises(DataError, match=r"2 image\(s\) of the train split cannot be decoded: \['example 3', 'example 1'\]"):
        handle_corrupt_images(dataset, "image", "error", "train")
    with pytest.raises(DataError, match="--corrupt_images must be one of error, skip"):
        handle_corrupt_images(dataset, "image", "ignore", "train")


# ---- subsets and labels -------------------------------------------------------------------------------------------


def labelled(labels: list[int]) -> Dataset:
    return Dataset.from_dict({"label": labels, "x": list(range(len(labels)))})


def test_few_shot_subset_is_per_class_and_seeded():
    dataset = labelled([0] * 10 + [1] * 10 + [2] * 2)
    subset = sample_per_class(dataset, "label", 3, seed=0)
    assert sorted(subset["label"]) == [0, 0, 0, 1, 1, 1, 2, 2]  # class 2 has only 2
    assert subset["x"] == sorted(subset["x"])
    assert sample_per_class(dataset, "label", 3, seed=0)["x"] == subset["x"]
    draws = {tuple(sample_per_class(dataset, "label", 3, seed=s)["x"]) for s in range(5)}
    assert len(draws) > 1
    with pytest.raises(DataError, match="--train_samples_per_class must be >= 1"):
        sample_per_class(dataset, "label", 0, seed=0)


def test_truncate():
    dataset = labelled(list(range(10)))
    assert len(truncate(dataset, 4, seed=0)) == 4
    assert truncate(dataset, None, seed=0) is dataset
    assert truncate(dataset, 4, seed=1)["x"] == truncate(dataset, 4, seed=1)["x"]
    with pytest.raises(DataError, match=r"^--max_eval_samples must be >= 1 \(or left out for every example\), got 0"):
        truncate(dataset, 0, seed=0, flag="max_eval_samples")


def test_max_samples_errors_name_the_flag_given():
    for flag in ("max_train_samples", "max_eval_samples"):
        with pytest.raises(DataError, match=f"^--{flag} must be >= 1"):
            prepare_datasets(dataset="digits", **{flag: 0})


def test_few_shot_warns_once_naming_the_short_classes(caplog):
    dataset = labelled([0, 0, 0, 1, 2, 2, 3])
    with caplog.at_level(logging.WARNING, logger="smile_hf.data"):
        subset = sample_per_class(dataset, "label", 3, seed=0, label_names=["cat", "dog", "eel", "owl"])
    assert sorted(subset["label"]) == [0, 0, 0, 1, 2, 2, 3]
    assert [r.getMessage() for r in caplog.records] == [
        "3 class(es) have fewer than 3 training examples; using all they have: dog (1), eel (2), owl (1)."
    ]


def test_string_and_integer_labels_are_encoded():
    splits = DatasetDict(
        train=Dataset.from_dict({"label": ["dog", "cat", "dog"]}), validation=Dataset.from_dict({"label": ["cat"]})
    )
    encoded, names = encode_labels(splits, "label")
    assert names == ["cat", "dog"]
    assert encoded["train"]["label"] == [1, 0, 1] and encoded["validation"]["label"] == [0]
    splits = DatasetDict(train=labelled([0, 4]), validation=labelled([2]))
    assert encode_labels(splits, "label")[1] == ["0", "1", "2", "3", "4"]
    bad = DatasetDict(train=Dataset.from_dict({"label": ["a"]}), validation=Dataset.from_dict({"label": ["zebra"]}))
    with pytest.raises(DataError, match="zebra"):
        encode_labels(bad, "label")


def test_label_range_and_columns_errors():
    with pytest.raises(
        DataError, match=r"2 label\(s\) outside the model's range 0\.\.2 \(first: label 3 at example 1\)"
    ):
        check_label_range(labelled([0, 3, 2, -1]), "label", 3, "train")
    with pytest.raises(DataError, match=r"no column 'image'; found columns \['label', 'x'\]"):
        check_columns(labelled([0]), "image", "label", "train")


# ---- image folders ------------------------------------------------------------------------------------------------


def write_folder(root, classes: dict[str, list[Image.Image]]) -> str:
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            fmt = "JPEG" if image.mode == "CMYK" else "PNG"
            (root / name / f"{i}.{fmt.lower()}").write_bytes(png_bytes(image, fmt))
    return str(root)


def test_image_folders_with_odd_modes(tmp_path):
    images = odd_mode_images()
    train = write_folder(tmp_path / "train", {"cat": images[:3], "dog": images[3:]})
    val = write_folder(tmp_path / "val", {"cat": images[:1], "dog": images[4:5]})
    data = prepare_datasets(train_dir=train, validation_dir=val)
    assert data.label_names == ["cat", "dog"]
    assert (len(data.train), len(data.eval)) == (6, 2)
    set_transforms(data, TransformConfig(crop_size=(8, 8), resize_size=(9, 9)))
    batch = collate([data.train[i] for i in range(6)])
    assert batch["pixel_values"].shape == (6, 3, 8, 8)
    assert sorted(batch["labels"].tolist()) == [0, 0, 0, 1, 1, 1]


def test_image_folder_with_a_corrupt_file(tmp_path):
    train = write_folder(tmp_path / "train", {"a": [Image.new("L", (4, 4))] * 3, "b": [Image.new("L", (4, 4))] * 3})
    (tmp_path / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    data = prepare_datasets(train_dir=train, train_val_split=0.5, corrupt_images="skip", seed=0)
    assert len(data.train) + len(data.eval) == 6


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="--train_dir '.*missing' does not exist"):
        prepare_datasets(train_dir=str(tmp_path / "missing"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="--train_dir '.*empty' contains no image files"):
        prepare_datasets(train_dir=str(tmp_path / "empty"))
    with pytest.raises(DataError, match="exactly one of --dataset NAME"):
        prepare_datasets()
    with pytest.raises(DataError, match="exactly one of --dataset NAME"):
        prepare_datasets(dataset="digits", train_dir=str(tmp_path))


def test_a_corrupt_validation_image_stops_the_run_before_training_naming_the_file(tmp_path):
    good = [Image.new("L", (4, 4))] * 3
    train = write_folder(tmp_path / "train", {"a": good, "b": good})
    val = write_folder(tmp_path / "val", {"a": good[:1], "b": good[:1]})
    (tmp_path / "val" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"1 image\(s\) of the validation split cannot be decoded: \['.*val/b/broken.png'\]"):
        prepare_datasets(train_dir=train, validation_dir=val)  # corrupt_images="error", the default
    data = prepare_datasets(train_dir=train, validation_dir=val, corrupt_images="skip")
    assert len(data.eval) == 2


def test_a_corrupt_training_image_stops_the_run_before_training_naming_the_file(tmp_path):
    good = [Image.new("L", (4, 4))] * 2
    train = write_folder(tmp_path / "train", {"a": good, "b": good})
    (tmp_path / "train" / "a" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    val = write_folder(tmp_path / "val", {"a": good[:1], "b": good[:1]})
    with pytest.raises(DataError, match=r"1 image\(s\) of the train split cannot be decoded: \['.*train/a/zz_broken.png'\]"):
        prepare_datasets(train_dir=train, validation_dir=val)  # corrupt_images="error": the same policy as validation
    assert len(prepare_datasets(train_dir=train, validation_dir=val, corrupt_images="skip").train) == 4


def test_a_training_image_that_breaks_after_the_scan_is_named_by_its_path(tmp_path):
    good = [Image.new("L", (4, 4))] * 2
    train = write_folder(tmp_path / "train", {"a": good, "b": good})
    val = write_folder(tmp_path / "val", {"a": good[:1], "b": good[:1]})
    data = prepare_datasets(train_dir=train, validation_dir=val)
    (tmp_path / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # e.g. a disk error mid-run
    set_transforms(data, TransformConfig(crop_size=(4, 4), resize_size=(4, 4)))
    with pytest.raises(DataError, match=r"Cannot decode the image .*train/a/0.png of the train split"):
        [data.train[i] for i in range(len(data.train))]


@pytest.mark.parametrize("all_nested", [True, False], ids=["every class nested", "one nested folder"])
def test_nested_class_folders_are_refused_naming_the_nested_path(tmp_path, all_nested):
    good = [Image.new("L", (4, 4))] * 2
    train = write_folder(tmp_path / "train", {"cat/sub": good, "dog/sub" if all_nested else "dog": good})
    with pytest.raises(DataError) as error:
        prepare_datasets(train_dir=train)
    message = str(error.value)
    count = 4 if all_nested else 2
    assert f"--train_dir '{train}' has {count} image(s) in nested folders (e.g. {train}/cat/sub/0.png)" in message
    assert "one sub-folder per class with images inside (e.g. train/cat/001.jpg)" in message
    assert "\n" not in message and "column" not in message


def test_a_class_only_in_the_validation_folder_is_an_error(tmp_path):
    good = [Image.new("L", (4, 4))] * 2
    train = write_folder(tmp_path / "train", {"cat": good, "dog": good})
    val = write_folder(tmp_path / "val", {"cat": good, "dog": good, "fox": good})
    with pytest.raises(DataError, match=r"validation split has 1 class\(es\) with no training example: \['fox'\]"):
        prepare_datasets(train_dir=train, validation_dir=val)


def test_image_folders_need_class_folders(tmp_path):
    one_class = write_folder(tmp_path / "one", {"cat": [Image.new("L", (4, 4))] * 2})
    with pytest.raises(DataError, match=r"images of 1 class folder\(s\) \(\['cat'\]\); a classifier needs at least 2"):
        prepare_datasets(train_dir=one_class)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"{i}.png").write_bytes(png_bytes(Image.new("L", (4, 4)), "PNG"))
    with pytest.raises(DataError, match=r"3 image\(s\) directly inside it .*one sub-folder per class"):
        prepare_datasets(train_dir=str(flat))


def test_train_resize_is_torchs_uint8_kernel_within_one_level_of_pils():
    """Training resizes with torch's anti-aliased uint8 bilinear kernel (faster), evaluation with PIL's (what the
    exported processor does): on a photo-like image the two differ by at most one intensity level."""
    from smile_hf.data.transforms import ImageTransform, TransformConfig, normalize, resize, uint8_tensor

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (375, 500, 3))
    image = Image.fromarray((np.cumsum(noise, axis=1) // np.arange(1, 501)[None, :, None]).astype(np.uint8))
    size = (96, 128)
    ours = resize(uint8_tensor(image), size).permute(1, 2, 0).numpy().astype(int)
    pil = np.asarray(image.resize((size[1], size[0]), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pil).max() <= 1 and 0 < (ours != pil).mean() < 0.05  # (some differ: two kernels)
    config = TransformConfig(crop_size=size, resize_size=size, random_horizontal_flip=False)
    expected = normalize(torch.from_numpy(ours).permute(2, 0, 1).float() / 255.0, config.mean, config.std)
    torch.testing.assert_close(ImageTransform(config, train=True)(image), expected, rtol=0, atol=1e-6)
    evaluated = normalize(torch.from_numpy(pil).permute(2, 0, 1).float() / 255.0, config.mean, config.std)
    torch.testing.assert_close(ImageTransform(config, train=False)(image), evaluated, rtol=0, atol=1e-6)
