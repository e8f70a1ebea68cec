"""The documentation: a short README that links into the site, every page of `docs/` in the nav of `mkdocs.yml`, and
the site built strictly (where the `docs` extra is installed): the tables generated from the code are in it, and each
fault the strict build exists for (a page outside the nav, a broken link, a docstring reference to nothing) fails
it."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
README_MAX_LINES = 250

needs_mkdocs = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers", "griffe")),
    reason="the docs extra is not installed (`pip install -e .[docs]`, or `make docs`)",
)


def nav_pages(nav) -> list[str]:
    """Every page file the nav names, in order."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def mkdocs_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_readme_is_short_and_links_into_the_docs():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move material into docs/"
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", "\n".join(lines))
    assert len(set(links)) >= 10  # the README's map of the site
    for link in links:
        assert (REPO_ROOT / link).is_file(), f"README.md links {link}, which does not exist"


def readme_commands() -> list[list[str]]:
    """The commands of the README's bash blocks (comments dropped, continuation lines joined) as argument lists."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line.split("  #")[0]) for line in lines if line.strip() and not line.startswith("#")]


def test_readme_commands_parse_as_written():
    """Every run-script command of the README parses with the script's own parser; the others are the Makefile's
    targets and pip."""
    from smile_hf.run import compare
    from smile_hf.run import parse_args as parse_run

    targets = re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)
    parsed = 0
    for argv in readme_commands():
        if argv[0] == "make":
            assert argv[1] in targets, argv
            continue
        if argv[0] == "pip":
            continue
        if argv[:2] == ["accelerate", "launch"]:
            argv = ["python", *argv[2:]]
        script = {"examples/run_smile.py": "train", "examples/compare_methods.py": "compare"}.get(argv[1], argv[1])
        command = argv[1] if argv[0] == "smile-hf" else script
        assert command in ("train", "compare"), f"a README command this test does not know: {argv}"
        (parse_run if command == "train" else compare.parse_args)(argv[2:])
        parsed += 1
    assert parsed >= 3


def test_every_docs_page_is_in_the_nav():
    pages = nav_pages(mkdocs_config()["nav"])
    assert len(pages) == len(set(pages)), "a page is twice in the nav"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert set(pages) == on_disk, f"not in the nav: {on_disk - set(pages)}; in the nav, missing: {set(pages) - on_disk}"


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)


@needs_mkdocs
def test_site_builds_strictly_with_the_generated_tables(tmp_path):
    from smile_hf.methods import REGULARIZERS
    from smile_hf.parity import TRAINER_ARGUMENTS, TRAINING_ARGUMENTS

    result = build(REPO_ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    site = tmp_path / "site"
    for page in nav_pages(mkdocs_config()["nav"]):
        assert (site / page.replace(".md", ".html")).is_file()
    # the API of SmileTrainer comes from its docstring, its doc-builder links resolved to the objects they name
    trainer = (site / "trainer.html").read_text(encoding="utf-8")
    assert 'id="smile_hf.SmileTrainer"' in trainer
    assert 'href="reference.html#smile_hf.modeling.load_student"' in trainer
    # one hyperparameter table per registered method, from the declarations
    methods = (site / "methods.html").read_text(encoding="utf-8")
    for name, cls in REGULARIZERS.items():
        assert f'id="{name}"' in methods, f"no section for the method {name}"
        for h in cls.hyperparameters:
            assert f"<code>{h.name}</code>" in methods and f"<code>{h.default!r}</code>" in methods
    parity = (site / "parity.html").read_text(encoding="utf-8")
    for name in {**TRAINING_ARGUMENTS, **TRAINER_ARGUMENTS}:
        assert f"<td><code>{name}</code></td>" in parity, f"{name} is not in the parity tables"
    # the committed reports are included as they are: a line of each, verbatim
    benchmarks = (site / "benchmarks.html").read_text(encoding="utf-8")
    assert "Cost per optimizer step (speed benchmark)" in benchmarks
    assert (site / "benchmarks" / "results" / "shots_curve.png").is_file()


@needs_mkdocs
def test_strict_build_fails_on_a_page_outside_the_nav_and_a_broken_link(tmp_path):
    """The site's own configuration on a copy of `docs/` with two faults; the API reference is left out (one module
    instead of all) to keep the build short."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("__pycache__"))
    (docs / "reference.md").write_text("# API reference\n\n::: smile_hf.parity\n")
    (docs / "orphan.md").write_text("# Not in the nav\n")
    (docs / "tuning.md").write_text((docs / "tuning.md").read_text() + "\nSee [the missing page](missing.md).\n")
    text = (REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    text = text.replace("docs_dir: docs", f"docs_dir: {docs}").replace("site_dir: site", f"site_dir: {tmp_path}/s")
    text = text.replace("- docs/", f"- {REPO_ROOT}/docs/").replace("[.]", f"[{REPO_ROOT}]")
    config = tmp_path / "mkdocs.yml"
    config.write_text(text)
    result = build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "orphan.md" in result.stderr and "not included in the \"nav\"" in result.stderr
    assert "missing.md" in result.stderr


@needs_mkdocs
def test_doc_builder_links_resolve_from_the_object_outwards(caplog):
    """The extension's rewriting on the package itself, loaded statically by griffe: a short name is found in the
    object's module, a full path as written, `~` shows the last name; a name of nothing is a warning (a failed
    strict build)."""
    import griffe

    sys.path.insert(0, str(DOCS))
    try:
        from griffe_hf_links import HfLinks, split_argument_groups
    finally:
        sys.path.remove(str(DOCS))
    package = griffe.load("smile_hf", search_paths=[str(REPO_ROOT)], extensions=griffe.load_extensions(HfLinks()))
    docstring = package["trainer.SmileTrainer"].docstring.value
    assert "[`load_student`][smile_hf.modeling.load_student]" in docstring
    assert "[`LoraEmaTeacher`][smile_hf.lora.LoraEmaTeacher]" in docstring
    result = package["calibration.CalibrationResult"].docstring.value
    assert "[`expected_calibration_error`][smile_hf.metrics.expected_calibration_error]" in result
    by_name = {"SmileTrainer": {"smile_hf.trainer.SmileTrainer"}}
    with caplog.at_level(logging.WARNING):
        text = HfLinks()._link(package["parity"], "no_such_object", package, by_name)
    assert text == "`no_such_object`"
    assert "[`no_such_object`] names no object of smile_hf" in caplog.text
    with caplog.at_level(logging.WARNING):
        found = HfLinks()._resolve(package["parity"], "twice", package, {"twice": {"smile_hf.a.twice", "smile_hf.b.twice"}})
    assert found is None and "[`twice`] is ambiguous" in caplog.text
    # the doc-builder's argument groups leave the Args section as paragraphs, and a new Args section goes on
    grouped = "Args:\n    a (`int`, *optional*):\n        first.\n\n    > Group\n\n    b (`str`): second.\n"
    expected = "Args:\n    a (int, optional):\n        first.\n\n\n**Group**\n\n\nArgs:\n    b (str): second."
    assert split_argument_groups(grouped) == expected
    # a group first: no empty section before it; the default leaves the type for a column of its own
    leading = "Args:\n    > Top\n\n    a (`int`, *optional*, defaults to 3): first."
    assert split_argument_groups(leading) == "\n**Top**\n\n\nArgs:\n    a (int, optional): first."
