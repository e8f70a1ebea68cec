"""MkDocs hooks of the smile_hf site: the tables that come from the code, and the committed benchmark plots.

A page asks for a generated table with an HTML comment on a line of its own:

- `<!-- generated: hyperparameters METHOD -->`: the hyperparameters `smile_hf.methods.REGULARIZERS[METHOD]` declares
  (`HyperParameter` objects). The methods page must ask for every registered method, or the build warns.
- `<!-- generated: parity training_arguments -->` / `<!-- generated: parity trainer_arguments -->`: the
  classification of `smile_hf.parity`.
- `<!-- generated: presets -->`: `smile_hf.data.DATASET_PRESETS`.
- `<!-- generated: api_reference -->`: one mkdocstrings block per module of the package.
- `<!-- generated: report NAME.md -->`: the committed report `benchmarks/results/NAME.md` as it is, in an open
  box; only its headings are moved below the page's (`#` becomes `####`), so that they stay out of the page's contents.

Anything else after `generated:` is a warning, and every warning fails `mkdocs build --strict`. The plots of
`benchmarks/results/` are added to the site under the same path, so pages link them as `benchmarks/results/NAME.png`.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

logger = logging.getLogger("mkdocs.plugins.smile_hf.hooks")

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: (\w+)\s*([\w.]*)\s*-->$", re.M)
METHODS_PAGE = "methods.md"


def _import():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import smile_hf  # noqa: F401

    return smile_hf


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def hyperparameters_table(method: str) -> str:
    from smile_hf.methods import REGULARIZERS

    declared = REGULARIZERS[method].hyperparameters
    if not declared:
        return "*No hyperparameters of its own.*"
    rows = []
    for h in declared:
        if h.search is None:
            search = "not searched"
        elif h.type in (int, float):
            search = f"{h.search[0]} to {h.search[1]}" + (", log scale" if h.log else "")
        else:
            search = "one of " + ", ".join(f"`{v!r}`" for v in h.search)
        meaning = (h.doc or h.help) + (f" *Default from:* {h.reference}" if h.reference else "")
        rows.append([f"`{h.name}`", f"`{h.default!r}` ({h.annotation})", h.valid_range or "any", search, meaning])
    return _table(["argument", "default", "valid", "default search", "meaning"], rows)


def parity_table(which: str) -> str:
    from smile_hf import parity

    entries = {"training_arguments": parity.TRAINING_ARGUMENTS, "trainer_arguments": parity.TRAINER_ARGUMENTS}[which]
    what = {parity.WORKS: "test", parity.IRRELEVANT: "why", parity.REFUSED: "error"}
    rows = [[f"`{name}`", status, f"{what[status]}: `{note}`" if status == parity.WORKS else f"{what[status]}: {note}"]
            for name, (status, note) in sorted(entries.items())]
    return _table(["name", "under SmileTrainer", "shown by / reason"], rows)


def presets_table(_: str) -> str:
    from smile_hf.data import DATASET_PRESETS

    rows = []
    for p in DATASET_PRESETS.values():
        built_in = "built in (data/ of the repository)" if p.is_text else "built in (scikit-learn)"
        hub = built_in if p.hub_id is None else p.hub_id + (f" @ {p.revision[:7]}" if p.revision else "")
        inputs = ", ".join(p.text_columns) if p.is_text else p.image_column
        rows.append([f"`{p.name}`", p.title, hub, p.train_split, p.eval_split, f"{inputs} / {p.label_column}",
                     p.num_labels, p.validation_split or "—", p.notes])
    return _table(["--dataset", "name", "Hub dataset", "train split", "eval split", "image or text / label columns",
                   "classes", "own validation split", "notes"], rows)


def api_reference(_: str) -> str:
    modules = []
    for path in sorted((ROOT / "smile_hf").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in parts) or "evaluate_modules" in parts:
            continue
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    options = "    options:\n      show_if_no_docstring: true\n      show_submodules: false\n      members_order: source"
    return "\n\n".join(f"::: {name}\n{options}" for name in modules)


def report(name: str) -> str:
    text = (ROOT / "benchmarks" / "results" / name).read_text(encoding="utf-8")  # a missing report: KeyError below
    text = re.sub(r"^(#{1,3}) ", lambda m: "###" + m.group(1) + " ", text, flags=re.M)
    body = "\n".join(("    " + line) if line.strip() else "" for line in text.splitlines())
    return f'???+ info "The committed report: `benchmarks/results/{name}`"\n\n{body}\n'


GENERATORS = {"hyperparameters": hyperparameters_table, "parity": parity_table, "presets": presets_table,
              "api_reference": api_reference, "report": report}


def on_config(config):
    _import()
    return config


def on_files(files, config):
    for png in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        files.append(File.generated(config, f"benchmarks/results/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    asked = set()

    def expand(match):
        kind, argument = match.group(1), match.group(2)
        if kind not in GENERATORS:
            logger.warning("%s: unknown generated table %r", page.file.src_uri, match.group(0))
            return match.group(0)
        if kind == "hyperparameters":
            asked.add(argument)
        try:
            return GENERATORS[kind](argument)
        except (KeyError, FileNotFoundError) as error:
            logger.warning("%s: %s names nothing known (%s)", page.file.src_uri, match.group(0), error)
            return match.group(0)

    markdown = MARKER.sub(expand, markdown)
    if page.file.src_uri == METHODS_PAGE:
        from smile_hf.methods import REGULARIZERS

        missing = sorted(set(REGULARIZERS) - asked)
        if missing:
            logger.warning("%s has no section (hyperparameter table) for the registered regulariser(s) %s",
                           METHODS_PAGE, ", ".join(missing))
    return markdown
