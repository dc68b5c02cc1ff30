"""The package's layers go one way (docs/architecture.md): no upward import, no cycle, no
function-local import of a project module, no private name used across modules.

Imports are read from the source with `ast`, `TYPE_CHECKING` blocks included: a type-only
import up a layer is still a dependency on the layer above.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "transit_arrow"

# Lowest first. A module may import its own layer or any layer below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "typing", "names", "storage")),
    ("format", ("record", "commit", "manifest", "layout", "lease", "segments")),
    ("engine", ("engine",)),
    (
        "features",
        (
            "lineage",
            "merge",
            "integrity",
            "maintenance",
            "inspect",
            "materialize",
            "lifecycle",
            "compaction",
            "heads",
            "scanplan",
            "cursors",
            "producers",
        ),
    ),
    ("query", ("query",)),
    ("presentation", ("display", "report")),
    ("facade", ("log", "stream", "view")),
    ("apps", ("workloads", "client")),
    ("surface", ("cli", "server", "__main__", "__init__")),
]


def _layer_of(module: str) -> int:
    """The layer index of a module given as a dotted path relative to the package."""
    top = module.split(".")[0] if module else "__init__"
    for index, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return index
    raise AssertionError(f"module {module!r} is in no layer; add it to LAYERS (and the docs)")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The project modules an `ImportFrom` names (relative to the package root)."""
    if node.level == 0:
        if not (node.module or "").startswith("transit_arrow"):
            return []
        base = (node.module or "").removeprefix("transit_arrow").lstrip(".")
    else:
        here = module.split(".") if module != "__init__" else []
        package = here if is_package else here[:-1]
        up = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        base = ".".join([*up, *([node.module] if node.module else [])])
    names = [base] if node.module else []
    if not node.module:
        names = [f"{base}.{a.name}" if base else a.name for a in node.names]
    return [n or "__init__" for n in names]


def _imports() -> dict[str, list[tuple[str, int, bool]]]:
    """module -> [(imported module, line, at module level?)]"""
    modules = _modules()
    graph: dict[str, list[tuple[str, int, bool]]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        top_level = set()
        for node in tree.body:
            top_level.add(id(node))
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks count as module level
                top_level |= {id(n) for n in node.body}
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for target in _resolve(module, is_package, node):
                    edges.append((target, node.lineno, id(node) in top_level))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("transit_arrow"):
                        target = alias.name.removeprefix("transit_arrow").lstrip(".")
                        edges.append((target or "__init__", node.lineno, id(node) in top_level))
        graph[module or "__init__"] = edges
    return graph


def _known(target: str, modules: set[str]) -> str | None:
    """The module an import target refers to (a name imported from a package is the package)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer_of(module)


def test_no_import_goes_up_a_layer() -> None:
    graph = _imports()
    modules = set(graph)
    upward = []
    for module, edges in graph.items():
        for target, line, _ in edges:
            found = _known(target, modules)
            if found is None or found == module:
                continue
            if _layer_of(found) > _layer_of(module):
                upward.append(f"{module}:{line} imports {found} (a higher layer)")
    assert not upward, "\n".join(upward)


def test_no_function_local_import_of_a_project_module() -> None:
    local = [
        f"{module}:{line} imports {target} inside a function"
        for module, edges in _imports().items()
        for target, line, top in edges
        if not top
    ]
    assert not local, "\n".join(local)


def test_no_import_cycle() -> None:
    graph = _imports()
    modules = set(graph)
    deps = {
        m: {t for t in (_known(e[0], modules) for e in edges) if t is not None and t != m}
        for m, edges in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(deps[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(deps):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.skipif(sys.platform == "win32", reason="ruff from the test extras")
def test_no_private_names_across_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "SLF001", str(PACKAGE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
