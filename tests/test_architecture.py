"""The package's structure: no import cycle (function-level imports included; in the package and among the
benchmarks), a leaf model-card module, small modules (package, examples, benchmarks), and the public API of the README
importable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "smile_hf"
SCRIPT_DIRS = (REPO_ROOT / "examples", REPO_ROOT / "benchmarks")
MAX_MODULE_LINES = 800  # the point to split a module; cohesion is judged in review


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:` (annotations only, never executed)."""
    for node in ast.iter_child_nodes(tree):
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if test is not None and "TYPE_CHECKING" in ast.unparse(test):
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def internal_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in its code (module level or inside functions), resolved to
    modules: `from . import x` counts as importing `pkg.x` when that is a module, else `pkg`. Imports under
    `if TYPE_CHECKING:` are left out: they never run."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "smile_hf"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "smile_hf":
                continue
            subs = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= subs or {target}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE_DIR.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): internal_imports(p, modules) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a list of nodes (first == last), or None. Depth-first search with colours."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert "smile_hf.trainer" in graph and "smile_hf.methods.registry" in graph["smile_hf.methods.smile"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_model_card_is_a_leaf():
    assert import_graph()["smile_hf.model_card"] == set()


SMALL_FILES = sorted(PACKAGE_DIR.rglob("*.py")) + sorted(p for d in SCRIPT_DIRS for p in d.rglob("*.py"))


@pytest.mark.parametrize("path", SMALL_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_modules_stay_small(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES


def test_size_check_covers_examples_and_benchmarks():
    names = {str(p.relative_to(REPO_ROOT)) for p in SMALL_FILES}
    assert {"examples/run_smile.py", "examples/compare_methods.py", "benchmarks/speed.py", "benchmarks/speed_gpu.py"} <= names


def benchmark_imports() -> dict[str, set[str]]:
    """Module of `benchmarks/` -> the modules of `benchmarks/` it imports anywhere (`from .x import`, `from . import
    x`, `from benchmarks.x import`, `import benchmarks.x`; function-level imports included)."""
    folder = REPO_ROOT / "benchmarks"
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("benchmarks")):
                module = (node.module or "").removeprefix("benchmarks").lstrip(".")
                found |= {module} if module else {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("benchmarks.")}
        graph[name] = (found & modules) - {name}
    return graph


def test_benchmarks_import_graph_has_no_cycle():
    graph = benchmark_imports()
    assert "stepping" in graph["speed_gpu"] and "speed" not in graph["speed_gpu"]  # shared helpers, not speed.py
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_readme_public_api_imports():
    import smile_hf
    from smile_hf import SmileTrainer, SmileTrainingArguments, TransferLoss, load_student  # noqa: F401
    from smile_hf.data import collate  # noqa: F401
    from smile_hf.metrics import ClassificationMetrics  # noqa: F401

    assert set(smile_hf.__all__) <= set(dir(smile_hf))


def test_no_import_cycle_through_type_checking_imports(monkeypatch):
    """With the imports under `if TYPE_CHECKING:` counted too, there is no cycle either (no type-only cycle)."""
    import sys

    monkeypatch.setattr(sys.modules[__name__], "runtime_nodes", ast.walk)
    graph = import_graph()
    assert "smile_hf.methods.context" in graph["smile_hf.methods.base"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
