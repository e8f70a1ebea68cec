# Copyright 2026 The smile_hf Authors. Licensed under the Apache License, Version 2.0.
"""Build the offline text snapshot `data/debian-descriptions`: Debian package descriptions labelled by the package's
archive `Section`, two tasks with disjoint sections.

- `source`: 12 sections (python, perl, devel, ...), what `scripts/train_text_source_model.py` pre-trains on;
- `target`: 6 other sections (games, sound, graphics, mail, database, math), the few-shot transfer task of
  `python -m benchmarks.text`.

The descriptions are read from the APT index of Debian 12 (bookworm, main): the `Section` of each package from
`Packages`, its English description from `Translation-en` (fetched by `apt-get update -o Acquire::Languages=en`).
One package per source package is kept (binary packages of one source share their text), descriptions seen twice
are dropped, and the text is the short description, then the first paragraph of the long one, cut at a word
boundary to at most `--max_chars` characters. The examples of each section are drawn with `--seed`.

    apt-get update -o Acquire::Languages=en
    python scripts/prepare_debian_descriptions.py --output_dir data/debian-descriptions
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import random
import subprocess
from collections import defaultdict

LISTS = "/var/lib/apt/lists"
SOURCE_SECTIONS = ["python", "perl", "devel", "net", "admin", "utils", "science", "doc", "x11", "text", "web",
                   "javascript"]  # fmt: skip
TARGET_SECTIONS = ["games", "sound", "graphics", "mail", "database", "math"]
SPLITS = {  # file name: (task's sections, examples per section)
    "source_train.csv": (SOURCE_SECTIONS, 60),
    "source_validation.csv": (SOURCE_SECTIONS, 15),
    "target_train.csv": (TARGET_SECTIONS, 30),
    "target_test.csv": (TARGET_SECTIONS, 50),
}


def read_index(pattern: str) -> list[dict[str, str]]:
    """The stanzas of the APT index files matching `pattern` (compressed ones read through `apt-helper cat-file`)."""
    paths = sorted(glob.glob(os.path.join(LISTS, pattern)))
    if not paths:
        raise SystemExit(f"No APT index file {pattern} in {LISTS}: run `apt-get update -o Acquire::Languages=en`.")
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", paths[0]], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip
    stanzas = []
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith(" ") and key is not None:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def description_text(description: str, max_chars: int) -> str:
    """The short description and the first paragraph of the long one, on one line, at most `max_chars` long."""
    short, _, long = description.partition("\n")
    paragraph = []
    for line in long.splitlines():
        if line.strip() == ".":
            break
        paragraph.append(line.strip())
    text = " ".join([short.strip().rstrip(".") + "."] + paragraph).strip()
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def collect(max_chars: int) -> dict[str, list[tuple[str, str]]]:
    """(package, text) per section, one package per source package, no text twice."""
    descriptions = {}
    for stanza in read_index("*debian_dists_bookworm_main_i18n_Translation-en*"):
        descriptions[(stanza.get("Package"), stanza.get("Description-md5"))] = stanza.get("Description-en", "")
    by_section, seen_sources, seen_texts = defaultdict(list), set(), set()
    wanted = set(SOURCE_SECTIONS) | set(TARGET_SECTIONS)
    for stanza in sorted(read_index("*debian_dists_bookworm_main_binary-amd64_Packages*"), key=lambda s: s["Package"]):
        section = stanza.get("Section", "")
        source = stanza.get("Source", stanza["Package"]).split(" ")[0]
        description = descriptions.get((stanza["Package"], stanza.get("Description-md5")))
        if section not in wanted or source in seen_sources or not description:
            continue
        text = description_text(description, max_chars)
        if text in seen_texts or len(text) < 40:
            continue
        seen_sources.add(source)
        seen_texts.add(text)
        by_section[section].append((stanza["Package"], text))
    return by_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="data/debian-descriptions")
    parser.add_argument("--max_chars", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_section = collect(args.max_chars)
    rng = random.Random(args.seed)
    pools = {section: rng.sample(items, len(items)) for section, items in sorted(by_section.items())}
    os.makedirs(args.output_dir, exist_ok=True)
    for name, (sections, count) in SPLITS.items():
        rows = []
        for section in sections:
            if len(pools[section]) < count:
                raise SystemExit(f"Section {section} has only {len(pools[section])} packages left, {count} wanted.")
            rows += [(package, text, section) for package, text in pools[section][:count]]
            pools[section] = pools[section][count:]
        rng.shuffle(rows)
        with open(os.path.join(args.output_dir, name), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["package", "text", "section"])
            writer.writerows(rows)
        print(f"{name}: {len(rows)} descriptions of {len(sections)} sections")


if __name__ == "__main__":
    main()
