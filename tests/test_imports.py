"""The package's imports go one way (docs/design.md: config, data, loop, checkpoint files, then
sample/eval/report): the graph of gankit modules importing gankit modules has no circle.

Function-level (lazy) imports count too: a circle closed by a lazy import still ties the modules
together, and only hides the order problem until some call path triggers it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gankit
from gankit.config import METRIC_NAMES

PACKAGE_DIR = Path(gankit.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the gankit modules it imports anywhere in its source (parent packages included,
    since importing gankit.a.b runs gankit/a/__init__.py first)."""
    modules = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for depth in range(1, len(parts) + 1):
                    imported = ".".join(parts[:depth])
                    # A module's own parent packages are already imported when it runs.
                    if imported in modules and imported != name and not name.startswith(imported + "."):
                        graph[name].add(imported)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (a list of modules, first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_sees_a_circle_closed_by_a_lazy_import():
    # The checker itself: a circle like the one config -> registry -> sources -> checkpoint -> config had.
    graph = {"config": {"registry"}, "registry": {"sources"}, "sources": {"checkpoint"}, "checkpoint": {"config"},
             "files": set()}
    assert find_cycle(graph) == ["checkpoint", "config", "registry", "sources", "checkpoint"]
    graph["checkpoint"] = {"files"}
    assert find_cycle(graph) is None


def test_gankit_imports_have_no_circle():
    graph = import_graph()
    assert "gankit.metrics.registry" in graph["gankit.metrics.periodic"]  # the graph sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_file_writing_and_config_sit_at_the_bottom():
    graph = import_graph()
    assert graph["gankit.files"] <= {"gankit.errors"}
    assert graph["gankit.config"] <= {"gankit.errors"}


def test_config_metric_names_are_the_registry_names():
    from gankit.metrics.registry import METRICS

    assert list(METRIC_NAMES) == list(METRICS)


def test_the_product_holds_no_test_machinery():
    # Fault injection lives in tests/fault_injection, the NumPy oracle in tests/numpy_reference.py.
    sources = {path: path.read_text() for path in PACKAGE_DIR.rglob("*.py")}
    assert not [path for path, text in sources.items() if "GANKIT_TEST_" in text]
    assert not [path for path in sources if path.stem == "numpy_reference"]
