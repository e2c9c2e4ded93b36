"""The package's import graph: no cycle (deferred imports included), and the layering rules of the callbacks and core.

The graph is read from the source, not from a run: every ``import`` statement of every module,
inside functions too (only ``if TYPE_CHECKING:`` blocks are left out, they never run). Importing
``a.b.c`` first runs the ``__init__`` of ``a.b``, so an edge to a module is also an edge to its
packages, except those the importing module sits in (they are already being imported). A name
imported from a lazy package (one with ``LAZY_EXPORTS``) is an edge to the module that defines it.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rareseg"


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module and package under ``rareseg/``."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


@cache
def _lazy_exports(package: str) -> dict[str, str]:
    return dict(getattr(importlib.import_module(package), "LAZY_EXPORTS", {}))


def _statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (s for child in node.orelse for s in _statements(ast.Module([child], [])))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _statements(node)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """rareseg modules an import statement of ``module`` runs."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    if node.level:
        base = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source not in MODULES:
        return set()
    targets = {source}
    for alias in node.names:
        if f"{source}.{alias.name}" in MODULES:
            targets.add(f"{source}.{alias.name}")
        elif alias.name in _lazy_exports(source):
            targets.add(_lazy_exports(source)[alias.name])
    return targets


def import_graph() -> dict[str, set[str]]:
    """Module -> the rareseg modules (and the packages around them) its import statements run."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        edges: set[str] = set()
        for node in _statements(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, node):
                parts = target.split(".")
                edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own_packages
        graph[module] = {edge for edge in edges if edge in MODULES and edge != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of a directed graph, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return [*path[path.index(successor) :], successor]
            if successor not in state and (cycle := visit(successor)) is not None:
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_package_init() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_sees_deferred_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "rareseg.training" in graph["rareseg.evaluation.ablation"]  # inside train_row
    assert "rareseg.inference.predictor" in graph["rareseg.lightning_modules.rareseg_module"]  # inside scene_saliency
    assert "rareseg.losses._checks" in graph["rareseg.losses.arbt"]  # from ._checks import ...
    assert (
        "rareseg.inference.checkpoint" in graph["rareseg.web.app"]
    )  # lazy: from rareseg.inference import load_predictor
    assert "rareseg.inference" in graph["rareseg.web.app"]  # the package's __init__ runs first


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_callbacks_import_only_the_core_from_rareseg() -> None:
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith("rareseg.callbacks"):
            foreign = {e for e in edges if not e.startswith(("rareseg.callbacks", "rareseg.core"))}
            assert not foreign, f"{module} imports {sorted(foreign)}"


def test_the_core_imports_nothing_else_of_rareseg() -> None:
    for module, edges in import_graph().items():
        if module.startswith("rareseg.core"):
            assert all(e.startswith("rareseg.core") for e in edges), f"{module} imports {sorted(edges)}"


def test_nothing_in_the_package_imports_the_entry_point() -> None:
    importers = sorted(module for module, edges in import_graph().items() if "rareseg.cli" in edges)
    assert importers == []
