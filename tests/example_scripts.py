"""The scripts of examples/ imported as modules, the way Python sees them when it runs one: with examples/ on
`sys.path`, so that `compare_methods.py`'s `from run_smile import ...` finds `run_smile.py` (and the tests, the
scripts and the dataclasses they define all share one `run_smile` module)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """`examples/<name>.py` as the module `name`."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)
