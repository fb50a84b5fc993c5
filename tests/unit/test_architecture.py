"""The shape of the house: imports flow one way and modules stay readable.

Read from the source with `ast` (nothing is imported), so a cycle is found even where Python
would tolerate it at run time (an import inside a function included: it is still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dicomnode"
#: "A few hundred lines": a module a person reads in one sitting.
MAX_LINES = 420
#: Stages of the flow: each a package of its own.
STAGES = ("ingest", "store", "imaging", "model", "objects", "work", "deliver", "pacs",
          "retention", "uploads", "http")  # fmt: skip
#: Composition roots: they may import anything, and nothing imports them.
ROOTS = ("dicomnode.node", "dicomnode.cli", "dicomnode.checks")
#: Pure packages: no disk, network, database or threads.
PURE = ("dicomnode.imaging", "dicomnode.objects", "dicomnode.retention.policy")
IMPURE_MODULES = ("sqlalchemy", "sqlmodel", "socket", "threading", "httpx", "pyorthanc",
                  "pynetdicom", "subprocess", "shutil")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def imports(path: Path, known: set[str]) -> Iterator[str]:
    """The dicomnode modules `path` imports (a `from package import module` names the module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dicomnode"):
                    yield _nearest(alias.name, known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("dicomnode"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield candidate if candidate in known else _nearest(node.module, known)


def _nearest(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: {
            target for target in imports(path, known) if target != name and target != "dicomnode"
        }
        for name, path in found.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def unit(module: str) -> str:
    """The package a module belongs to (a top-level module is a unit of its own)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_stages_of_the_flow_are_packages() -> None:
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file(), stage
    flat = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(flat) <= 12, f"the top level is growing flat again: {sorted(flat)}"


def test_no_import_cycle_between_modules() -> None:
    assert cycles(graph()) == []


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for source, targets in graph().items():
        packages.setdefault(unit(source), set()).update(
            unit(t) for t in targets if unit(t) != unit(source)
        )
    assert cycles(packages) == []


def test_only_the_composition_root_is_imported_by_nobody_it_imports() -> None:
    edges = graph()
    offenders = sorted(s for s, targets in edges.items() if s not in ROOTS and set(ROOTS) & targets)
    assert offenders == [], "only node/cli/checks compose; nothing may import them"


def test_pure_packages_do_no_io() -> None:
    for name, path in modules().items():
        if not name.startswith(PURE):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for imported in names:
                assert imported.split(".")[0] not in IMPURE_MODULES, f"{name} imports {imported}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_readable(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (> {MAX_LINES}): split it"


def test_the_checker_finds_a_cycle() -> None:
    # The check itself must be able to fail.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
