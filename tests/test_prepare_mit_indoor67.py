"""scripts/prepare_mit_indoor67.py on a generated stand-in for the official download (a tarball of tiny JPEGs with
`Images/<class>/<file>`, more images than listed, and the two list files): exactly the listed images land in
`train/` and `test/`, byte for byte, none of the test images in train, and the folders load as `--train_dir` /
`--validation_dir`; every bad input is one error line."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smile_hf.data import load_image_folders
from smile_hf.run import parse_args

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "prepare_mit_indoor67.py"
spec = importlib.util.spec_from_file_location("prepare_mit_indoor67", SCRIPT)
prepare_mit_indoor67 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_mit_indoor67)

CLASSES = {"bakery": (4, 2), "kitchen": (3, 2), "airport_inside": (2, 1)}
"""class -> (train, test) images listed; each class also has 2 images in neither list."""

pytestmark = pytest.mark.cpu_only("file preparation and image folders: no model or tensor on a device")


def jpeg(index: int) -> bytes:
    """A distinct 6 x 6 JPEG (its color encodes `index`)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), (index * 37) % 256, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def download(tmp_path: Path) -> dict:
    """`indoorCVPR_09.tar` (under the prefix `indoorCVPR_09/`, as some mirrors ship it), `TrainImages.txt`,
    `TestImages.txt` (CRLF line ends, as the official ones), and what they hold."""
    images, train, test, index = {}, [], [], 0
    for name, (n_train, n_test) in CLASSES.items():
        files = [f"{name}/{name}_{i:04d}.jpg" for i in range(n_train + n_test + 2)]
        for f in files:
            images[f], index = jpeg(index), index + 1
        train += files[:n_train]
        test += files[n_train : n_train + n_test]
    tar_path = tmp_path / "indoorCVPR_09.tar"
    with tarfile.open(tar_path, "w") as tar:
        for entry, data in images.items():
            info = tarfile.TarInfo(f"indoorCVPR_09/Images/{entry}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for list_name, entries in (("TrainImages.txt", train), ("TestImages.txt", test)):
        (tmp_path / list_name).write_bytes("".join(f"{e}\r\n" for e in entries).encode())
    return {"tar": str(tar_path), "images": images, "train": train, "test": test, "root": tmp_path}


def run(download: dict, images: str | None = None, output: str = "out", **lists) -> dict[str, int]:
    root = download["root"]
    return prepare_mit_indoor67.prepare(
        images or download["tar"], lists.get("train_list", str(root / "TrainImages.txt")),
        lists.get("test_list", str(root / "TestImages.txt")), str(root / output),
    )  # fmt: skip


def written(folder: Path) -> dict[str, bytes]:
    """`<class>/<file>` -> bytes of every file under `folder`."""
    return {str(p.relative_to(folder)).replace(os.sep, "/"): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("source", ["tarball", "extracted folder"])
def test_exactly_the_listed_images_in_their_split(download, source):
    images = download["tar"]
    if source == "extracted folder":  # what `tar xf indoorCVPR_09.tar` gives
        for entry, data in download["images"].items():
            (download["root"] / "extracted" / "Images" / entry).parent.mkdir(parents=True, exist_ok=True)
            (download["root"] / "extracted" / "Images" / entry).write_bytes(data)
        images = str(download["root"] / "extracted")
    counts = run(download, images)
    out = download["root"] / "out"
    train, test = written(out / "train"), written(out / "test")
    assert train == {e: download["images"][e] for e in download["train"]}  # byte for byte, no unlisted image
    assert test == {e: download["images"][e] for e in download["test"]}
    assert not set(train.values()) & set(test.values())  # no test image in train, under any name
    for name, (n_train, n_test) in CLASSES.items():
        assert len(list((out / "train" / name).iterdir())) == n_train
        assert len(list((out / "test" / name).iterdir())) == n_test
    assert counts == {"train": 9, "test": 5, "classes": 3}
    assert "; the official lists hold 5360 / 1340 of 67 classes." in prepare_mit_indoor67.summary(counts, "out")


def test_the_layout_loads_as_train_dir_and_validation_dir(download, tmp_path):
    run(download)
    data = load_image_folders(str(tmp_path / "out" / "train"), str(tmp_path / "out" / "test"), str(tmp_path / "cache"))
    assert (len(data["train"]), len(data["validation"])) == (9, 5)
    assert sorted(data["train"].features["label"].names) == sorted(CLASSES)


def test_a_run_on_the_layout_is_named_the_official_split(download, tmp_path):
    from smile_hf.data.prepare import local_data_source

    run(download)
    out = tmp_path / "out"
    source = local_data_source(str(out / "train"), str(out / "test"))
    assert (source.name, source.official_split, source.local) == ("MIT Indoor-67", True, True)
    assert source.eval_split_role == "the official test split (TestImages.txt)"
    # the file describes only that pair: other folders beside it, or one folder alone, are not the official split
    (out / "other").mkdir()
    for train, evaluation in ((out / "train", out / "other"), (out / "test", out / "train"), (out / "train", None)):
        source = local_data_source(str(train), None if evaluation is None else str(evaluation))
        assert not source.official_split and source.name == train.name


def broken(download: dict, case: str) -> dict:
    """The arguments of [`run`] for one bad input."""
    root = download["root"]
    if case == "missing list":
        return {"train_list": str(root / "nowhere.txt")}
    if case == "missing archive":
        return {"images": str(root / "indoorCVPR_09_missing.tar")}
    if case == "not an archive":
        return {"images": str(root / "TrainImages.txt")}
    if case == "listed image not in the archive":
        (root / "Train2.txt").write_text("\n".join(download["train"] + ["kitchen/not_there.jpg"]))
        return {"train_list": str(root / "Train2.txt")}
    if case == "image in both lists":
        (root / "Train2.txt").write_text("\n".join(download["train"] + download["test"][:1]))
        return {"train_list": str(root / "Train2.txt")}
    if case == "not a list":
        (root / "Train2.txt").write_text("../../etc/passwd\n")
        return {"train_list": str(root / "Train2.txt")}
    (root / "out").mkdir()
    (root / "out" / "old.txt").write_text("x")
    return {}


BAD_INPUTS = {
    "missing list": r"List file '.*nowhere\.txt' not found",
    "missing archive": r"--images '.*indoorCVPR_09_missing\.tar' not found",
    "not an archive": r"is not a tar archive",
    "listed image not in the archive": r"1 listed image\(s\) are not in --images .*, e\.g\. kitchen/not_there\.jpg",
    "image in both lists": r"1 image\(s\) are listed in both the train and the test list, e\.g\. bakery/bakery_0004\.jpg",
    "not a list": r"is not a list of <class>/<file> lines",
    "non-empty output": r"--output_dir '.*out' is not empty",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line(download, case, capsys):
    args = broken(download, case)
    root = download["root"]
    argv = ["--images", args.get("images", download["tar"]), "--output_dir", str(root / "out"),
            "--train_list", args.get("train_list", str(root / "TrainImages.txt")),
            "--test_list", str(root / "TestImages.txt")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        prepare_mit_indoor67.main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert error.startswith("prepare_mit_indoor67.py: error: ")
    with pytest.raises(prepare_mit_indoor67.PrepareError, match=BAD_INPUTS[case]):
        prepare_mit_indoor67.prepare(argv[1], argv[5], argv[7], argv[3])
    if case != "non-empty output":
        assert not (root / "out").exists()  # checked before anything is written


def test_docs_recipe_uses_the_scripts_arguments():
    """The two commands of `docs/data.md`: the script's arguments, then run_smile.py's on the folders it writes."""
    text = (REPO_ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text[text.index("### MIT Indoor-67 with its official split") :], re.S)
    lines = [line.split("  #")[0] for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]
    prepare, train = (shlex.split(line) for line in lines)
    assert prepare[:2] == ["python", "scripts/prepare_mit_indoor67.py"]
    assert train[:2] == ["python", "examples/run_smile.py"]
    args = prepare_mit_indoor67.parse_args(prepare[2:])
    _, data_args, _ = parse_args(train[2:])
    assert (data_args.train_dir, data_args.validation_dir) == (f"{args.output_dir}/train", f"{args.output_dir}/test")
