"""A griffe extension: the Hugging Face doc-builder links of smile_hf's docstrings as mkdocs-autorefs references.

A docstring writes [`SmileTrainer`], [`smile_hf.run.recipes`] or [`~smile_hf.metrics.calibration_bins`] (the `~`
shows the last name only). Each becomes `[`shown`][full.path]`, the full path found from the object outwards: the
object's own members, then those of each enclosing class and module up to `smile_hf`, then the one public object of
the package with that name. A reference that names nothing of the package, or several objects, is reported as a
warning naming the docstring, which fails `mkdocs build --strict`. Names outside the package are linked to their
documentation through `EXTERNAL`.

It also reads the Hugging Face idioms of an `Args:` section that Google-style parsing does not know: a group title
(`> Parameters that control mixing`) and a paragraph among the arguments each close the section, stand as a
paragraph (the title in bold), and a new `Args:` section goes on after them; the type of an argument,
"(`str`, *optional*, defaults to `"smile"`)", loses its backticks and stars, since it is shown as code.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict

import griffe

logger = logging.getLogger("mkdocs.plugins.smile_hf.links")

LINK = re.compile(r"\[`(~?[A-Za-z_][\w.]*)`\](?![\[(])")
ARGS_SECTION = re.compile(r"^(Args|Arguments|Parameters):\s*$")
ITEM = re.compile(r"^    \*{0,2}\w+( \(.*\))?:(\s|$)")
ITEM_TYPE = re.compile(r"^(    \*{0,2}\w+ \()(.*?)(\):(\s|$))")
FENCE = re.compile(r"(^\s*```.*?^\s*```)", re.S | re.M)

EXTERNAL = {
    "transformers.TrainingArguments": "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments",
    "transformers.Trainer": "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.Trainer",
    "torch.utils._python_dispatch.TorchDispatchMode": "https://docs.pytorch.org/docs/stable/notes/extending.html#extending-all-torch-api-with-modes",
}


def split_argument_groups(text: str) -> str:
    """The docstring with the group titles and paragraphs inside an `Args:` section moved out of it."""
    out, header, in_args, in_text, items = [], None, False, False, 0
    for line in text.splitlines():
        if ARGS_SECTION.match(line):
            header, in_args, in_text, items = line, True, False, 0
            out.append(line)
            continue
        if in_args and line and not line.startswith(" "):
            in_args = in_text = False  # a line at the margin ends the section
        if in_args and line.startswith("    ") and not line.startswith("     "):
            if ITEM.match(line):
                line = ITEM_TYPE.sub(lambda m: m.group(1) + plain_type(m.group(2)) + m.group(3), line)
                if in_text:
                    out += ["", header]
                in_text, items = False, items + 1
            else:
                if not in_text:
                    if items == 0 and header in out:  # a section that would hold no argument: dropped
                        del out[len(out) - 1 - out[::-1].index(header)]
                    out.append("")
                out.append(f"**{line[6:].strip()}**" if line[4:].startswith("> ") else line[4:])
                in_text = True
                continue
        elif in_args and in_text and line.startswith("        "):
            out.append(line[4:])
            continue
        out.append(line)
    return "\n".join(out)


def plain_type(text: str) -> str:
    """The doc-builder's "`str`, *optional*, defaults to `"smile"`" as the type column shows it: "str, optional"
    (the default has a column of its own)."""
    text = re.sub(r",?\s*defaults? to .*$", "", text)
    return text.replace("`", "").replace("*", "")


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _lookup(scope, dotted: str):
    try:
        return scope[dotted]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


class HfLinks(griffe.Extension):
    """Rewrites every [`Name`] of the package's docstrings when the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != "smile_hf":
            return
        by_name: dict[str, set[str]] = defaultdict(set)
        for obj in _walk(pkg):
            if not obj.name.startswith("_"):
                by_name[obj.name].add(obj.path)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                text = split_argument_groups(obj.docstring.value)
                obj.docstring.value = self._rewrite(obj, text, pkg, by_name)

    def _rewrite(self, obj, text: str, pkg, by_name) -> str:
        parts = FENCE.split(text)
        for i in range(0, len(parts), 2):  # odd parts are fenced code blocks: left as they are
            parts[i] = LINK.sub(lambda m: self._link(obj, m.group(1), pkg, by_name), parts[i])
        return "".join(parts)

    def _link(self, obj, written: str, pkg, by_name) -> str:
        name = written.lstrip("~")
        shown = name.rsplit(".", 1)[-1] if written.startswith("~") else name
        if name in EXTERNAL:
            return f"[`{shown}`]({EXTERNAL[name]})"
        target = self._resolve(obj, name, pkg, by_name)
        if target is None:
            logger.warning("%s: the docstring reference [`%s`] names no object of smile_hf", obj.path, written)
            return f"`{shown}`"
        if target.startswith("http"):
            return f"[`{shown}`]({target})"
        return f"[`{shown}`][{target}]"

    def _resolve(self, obj, name: str, pkg, by_name) -> str | None:
        if name.startswith("smile_hf."):
            found = _lookup(pkg, name[len("smile_hf.") :])
            return self._path(found, name)
        scope = obj if (obj.is_class or obj.is_module) else obj.parent
        while scope is not None:
            found = _lookup(scope, name)
            if found is not None:
                return self._path(found, name)
            scope = scope.parent
        first, _, rest = name.partition(".")
        candidates = by_name.get(first, set())
        if len(candidates) == 1:
            return self._path(_lookup(pkg, next(iter(candidates)).split(".", 1)[1] + ("." + rest if rest else "")), name)
        if len(candidates) > 1:
            logger.warning("%s: [`%s`] is ambiguous (%s): write its full path", obj.path, name, ", ".join(sorted(candidates)))
        return None

    def _path(self, found, name: str) -> str | None:
        if found is None:
            return None
        if found.is_alias:
            target = found.target_path
            if not target.startswith("smile_hf"):
                return EXTERNAL.get(target)
            try:
                return found.final_target.path
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        return found.path
