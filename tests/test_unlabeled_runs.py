"""Unlabelled images in runs: `--unlabeled_from_train` (the rest of the training split, labels dropped, never an
evaluation or held-out validation image), `--unlabeled_dir` (scanned for undecodable images like the labelled ones),
what `results.json` and the card record, and an exact mid-epoch resume with the unlabelled stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from smile_hf import SmileTrainer, SmileTrainingArguments
from smile_hf import run as run_smile
from smile_hf.data import INDEX_COLUMN, DataError
from smile_hf.data.transforms import augmentation_generator
from smile_hf.run.arguments import InputError
from smile_hf.run.loading import prepare_data

from .test_compare_methods import restore_threads  # noqa: F401, F811  (fixture)
from .test_export import one_thread  # noqa: F401  (autouse fixture)
from .test_resume_mid_epoch import CHECKPOINT, RESUME_AT, STEPS, final_state
from .testing_utils import script_device_args, training_device_args

FEW_SHOT = ["--dataset", "digits", "--train_samples_per_class", "4", "--max_eval_samples", "30", "--report_to", "none"]


def raw(dataset, column=INDEX_COLUMN):
    return list(dataset.with_format(None)[column])


def image_bytes(dataset, column="image"):
    return {bytes(value["bytes"]) for value in raw(dataset, column)}


def test_unlabeled_from_train_is_the_rest_of_train_without_labels_nor_evaluation_or_validation_images():
    argv = [*FEW_SHOT, "--validation_samples_per_class", "1", "--unlabeled_from_train", "True"]
    model_args, data_args, _ = run_smile.parse_args(argv)
    data = prepare_data(data_args, model_args, 0, None, validation=True)
    full = prepare_data(run_smile.parse_args(["--dataset", "digits", "--report_to", "none"])[1], model_args, 0, None)
    assert data.label_column not in data.unlabeled.column_names  # the labels are dropped, not merely unread
    assert set(data.unlabeled[0]) == {"pixel_values"}
    unlabeled, train, validation = (set(raw(d)) for d in (data.unlabeled, data.train, data.validation))
    assert unlabeled.isdisjoint(train) and unlabeled.isdisjoint(validation)  # the search / calibration split stays out
    assert unlabeled | train | validation == set(raw(full.train))  # every other training image is unlabelled
    assert image_bytes(data.unlabeled).isdisjoint(image_bytes(data.eval))  # and no evaluation image is
    assert image_bytes(data.unlabeled).isdisjoint(image_bytes(full.eval))
    # the training transform: a random crop of the same image differs between passes of the stream
    transform = data.unlabeled.format["format_kwargs"]["transform"]
    first = data.unlabeled[0]["pixel_values"]
    transform.set_epoch(1)
    assert not torch.equal(first, data.unlabeled[0]["pixel_values"])


def test_a_second_view_is_another_draw_of_the_training_transform_of_the_same_images():
    """Mean Teacher's two views: view 1 of a draw crops the same images differently; view 0 is the stream's own."""
    from smile_hf.unlabeled import UnlabeledStream

    model_args, data_args, _ = run_smile.parse_args([*FEW_SHOT, "--unlabeled_from_train", "True"])
    data = prepare_data(data_args, model_args, 0, None)
    stream = UnlabeledStream(data.unlabeled, 8, seed=0)
    first, second, again = stream.batch(3), stream.batch(3, view=1), stream.batch(3)
    assert torch.equal(first, again)  # the view is put back: the stream's own reads are unchanged
    assert not torch.equal(first, second)
    transform = data.unlabeled.format["format_kwargs"]["transform"]
    indices = [i for _, i in stream.positions(3)]
    rows = data.unlabeled.with_format(None)[indices]
    for row, (index, image) in enumerate(zip(rows[INDEX_COLUMN], rows["image"])):
        decoded = transform._decode(image, index)
        for view, batch in ((0, first), (1, second)):  # by hand: the transform with the view's generator
            generator = augmentation_generator(transform.seed, 0, index, view)
            torch.testing.assert_close(batch[row], transform.transform(decoded, generator), rtol=0, atol=0)


def test_unlabeled_from_train_needs_a_subset_and_excludes_unlabeled_dir(tmp_path):
    model_args, data_args, _ = run_smile.parse_args(["--dataset", "digits", "--unlabeled_from_train", "True"])
    with pytest.raises(InputError, match="add --train_samples_per_class"):
        prepare_data(data_args, model_args, 0, None)
    model_args, data_args, _ = run_smile.parse_args([*FEW_SHOT, "--unlabeled_from_train", "True",
                                                     "--unlabeled_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(InputError, match="not both"):
        prepare_data(data_args, model_args, 0, None)


def unlabeled_folder(path: Path, num: int = 6) -> Path:
    (path / "nested").mkdir(parents=True)
    for i in range(num):
        image = Image.new("RGB", (24, 20), color=(20 * i, 255 - 20 * i, 7 * i))
        image.save(path / ("nested" if i % 2 else "") / f"u{i}.png")
    return path


def test_unlabeled_dir_trains_and_results_and_card_say_how_many_and_from_where(tmp_path):
    folder = unlabeled_folder(tmp_path / "unlabelled")
    (folder / "broken.png").write_bytes(b"not an image")
    argv = [*FEW_SHOT, "--unlabeled_dir", str(folder), "--method", "smile", "--max_steps", "2",
            "--per_device_train_batch_size", "8", "--save_strategy", "no", "--disable_tqdm", "True",
            "--output_dir", str(tmp_path / "out"), *script_device_args()]  # fmt: skip
    with pytest.raises(DataError, match="1 image\\(s\\) of the unlabelled split cannot be decoded: .*broken.png"):
        run_smile.main(argv)
    result = run_smile.main([*argv, "--corrupt_images", "skip"])
    assert result["unlabeled"] == {"images": 6, "source": "unlabeled_dir", "per_batch": 8}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["runs"][0]["unlabeled"]["images"] == 6
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Also trained on 6 unlabelled images (unlabeled_dir), 8 per batch and process." in card
    with pytest.raises(InputError, match="Method 'l2sp' cannot use unlabelled images"):  # before loading anything
        run_smile.main([*argv, "--method", "l2sp"])
    with pytest.raises(InputError, match="Method 'fixmatch' trains on unlabelled images: add --unlabeled_dir"):
        run_smile.main([*FEW_SHOT, "--method", "fixmatch", "--output_dir", str(tmp_path / "fm")])


def resume_trainer(output_dir, method, **kwargs):
    argv = ["--dataset", "digits", "--train_samples_per_class", "4", "--max_eval_samples", "10", "--report_to", "none",
            "--unlabeled_from_train", "True", "--model_name_or_path", CHECKPOINT]  # fmt: skip
    model_args, data_args, _ = run_smile.parse_args(argv)
    from transformers import AutoImageProcessor

    data = prepare_data(data_args, model_args, 0, AutoImageProcessor.from_pretrained(CHECKPOINT))
    args = SmileTrainingArguments(
        output_dir=str(output_dir), report_to="none", **training_device_args(), method=method, max_steps=STEPS,
        per_device_train_batch_size=16, save_strategy="steps", save_steps=2, disable_tqdm=True,
        ema_update_every=2, final_finetune_fraction=0.3, unlabeled_batch_ratio=0.5,
        model_init_kwargs={"num_labels": 10, "id2label": data.id2label}, **kwargs,
    )  # fmt: skip
    return SmileTrainer(model=CHECKPOINT, args=args, train_dataset=data.train, unlabeled_dataset=data.unlabeled)


@pytest.mark.parametrize("method", ["smile", "mean_teacher", pytest.param("fixmatch", marks=pytest.mark.slow)])
def test_mid_epoch_resume_with_unlabelled_images_is_exact(tmp_path, method):
    uninterrupted = resume_trainer(tmp_path / "a", method)
    uninterrupted.train()
    resumed = resume_trainer(tmp_path / "b", method)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{RESUME_AT}"))
    term = {"smile": "loss_reg_unlabeled", "fixmatch": "loss_unlabeled", "mean_teacher": "loss_consistency"}[method]
    assert any(term in entry for entry in uninterrupted.state.log_history)
    expected, got = final_state(uninterrupted), final_state(resumed)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key  # bit for bit: the same unlabelled images, mixes and views


def test_compare_methods_passes_the_unlabelled_images_to_the_methods_that_use_them(tmp_path, restore_threads):  # noqa: F811
    from smile_hf.run import compare as compare_methods

    argv = [*FEW_SHOT, "--unlabeled_from_train", "True", "--seeds", "0", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--save_strategy", "no", "--disable_tqdm", "True",
            "--torch_num_threads", "1", "--output_dir", str(tmp_path / "c"), *script_device_args()]  # fmt: skip
    runs = compare_methods.main([*argv, "--compare_methods", "finetune,smile,fixmatch", "--unlabeled_batch_ratio", "0.5"])
    unlabeled = {r["label"]: r["unlabeled"] for r in runs}
    assert unlabeled["finetune"] is None  # fine-tuning cannot use them: not refused, not given
    rest = 898 - 40  # the digits' training split less the 4-shot subset
    assert unlabeled["smile"] == unlabeled["fixmatch"] == {
        "images": rest, "source": "the training images left out of the subset, labels dropped", "per_batch": 2,
    }  # fmt: skip
    with pytest.raises(InputError, match="None of the methods finetune, l2sp can use unlabelled images"):
        compare_methods.main([*argv, "--compare_methods", "finetune,l2sp", "--output_dir", str(tmp_path / "d")])
