"""Predict mode on ONNX Runtime (`smile-hf train --do_train False --do_predict --predict_backend onnx`) against the
PyTorch predict mode on the same folder of images: the bundled checkpoint, exported with `smile-hf export`.

Both read the images through the same evaluation transform and differ only in what computes the logits: ONNX Runtime's
float32 kernels agree with PyTorch's to 1e-6 to 4e-6 on these models (tests/test_onnx_export.py). A softmax
probability p_i moves by at most 2 p_i (1 - p_i) <= 1/2 times the largest logit difference (the absolute row sum of
its Jacobian), so at most 2e-6 here: 1e-5 absolute on the scores is a margin of 5x, and the top-k labels, whose
scores lie much further apart on these images, must be the same (measured: every score of the ten classes within 6e-7, the same labels).
"""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest
from PIL import Image

from smile_hf import run as run_smile
from smile_hf.onnx_export import export_onnx

from .test_export import one_thread  # noqa: F401  (autouse: one torch thread for tiny models)
from .test_inference import read_predictions, write_digit_images
from .test_onnx_export import copy_bundled, requires_onnx

SCORE_TOLERANCE = 1e-5


def predict(folder, images, output, *extra):
    run_smile.main([
        "--do_train", "False", "--do_predict", "--predict_dir", str(images), "--top_k", "3",
        "--model_name_or_path", str(folder), "--output_dir", str(output), "--report_to", "none", *extra,
    ])  # fmt: skip
    return read_predictions(output / "predictions.csv")


@requires_onnx
def test_onnx_predict_mode_gives_the_pytorch_predictions(tmp_path, capsys):
    folder = copy_bundled(tmp_path)
    export_onnx(folder, quantize="int8")
    images = tmp_path / "images"
    write_digit_images(images)  # grayscale 8 x 8 digits
    rng = np.random.RandomState(0)
    for i in range(3):  # colour images of other sizes: resized and converted by the same transform
        Image.fromarray((rng.rand(40 + 9 * i, 30, 3) * 255).astype("uint8")).save(images / f"colour{i}.png")

    expected = predict(folder, images, tmp_path / "pytorch")
    # ONNX: the command of the folder's model card, as written there (paths filled in)
    card = (folder / "README.md").read_text(encoding="utf-8")
    command = re.search(r"```bash\n(smile-hf train .*?)```", card, re.S).group(1).replace("\\\n", " ")
    command = command.replace("path/to/this/folder", str(folder)).replace("my_images", str(images))
    argv = shlex.split(command.replace("--output_dir predictions", f"--output_dir {tmp_path / 'onnx'}"))
    assert argv[:2] == ["smile-hf", "train"] and "--predict_backend" in argv
    run_smile.main([*argv[2:], "--top_k", "3", "--report_to", "none"])
    got = read_predictions(tmp_path / "onnx" / "predictions.csv")
    assert f"{folder / 'model.onnx'} on ONNX Runtime" in capsys.readouterr().out
    assert sorted(got) == sorted(expected) and len(got) == 13
    for file, rows in expected.items():
        assert [label for label, _ in got[file]] == [label for label, _ in rows], file
        assert [score for _, score in got[file]] == pytest.approx([score for _, score in rows], abs=SCORE_TOLERANCE)

    # the int8 copy: the file named is the one run (its scores are not the float32 ones)
    quantized = predict(folder, images, tmp_path / "int8", "--predict_backend", "onnx", "--onnx_file", "model.int8.onnx")
    assert sorted(quantized) == sorted(expected)
    assert any(quantized[f][0][1] != got[f][0][1] for f in got)


@requires_onnx
def test_a_folder_without_the_onnx_file_says_how_to_export_it(tmp_path):
    folder = copy_bundled(tmp_path)
    images = tmp_path / "images"
    write_digit_images(images)
    with pytest.raises(run_smile.InputError, match=re.escape("no model.onnx in")) as error:
        predict(folder, images, tmp_path / "out", "--predict_backend", "onnx")
    assert "smile-hf export" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--do_predict", "--predict_dir", ".", "--predict_backend", "onnx", "--dataset", "digits"], "--do_train False"),
        (["--do_train", "False", "--do_eval", "--do_predict", "--predict_dir", ".", "--dataset", "digits",
          "--model_name_or_path", "m", "--predict_backend", "onnx"], "without --do_eval"),
        (["--do_train", "False", "--do_predict", "--predict_dir", ".", "--model_name_or_path", "m",
          "--onnx_file", "model.int8.onnx"], "--onnx_file is read with --predict_backend onnx only"),
    ],
)  # fmt: skip
def test_onnx_backend_arguments_are_checked(argv, message):
    with pytest.raises(run_smile.InputError, match=re.escape(message)):
        run_smile.parse_args(argv)
