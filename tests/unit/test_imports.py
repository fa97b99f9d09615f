"""How qsrv's modules may import each other, checked on the source (ast; nothing is imported).

Privacy. A subpackage (``qsrv/X/``) keeps its modules private (``qsrv.X._y``) and exports, from
its ``__init__``, what other packages may use. So a module may import:

- anything from its own subpackage, private or not (``qsrv.store._store`` from
  ``qsrv.store._node``);
- the public names of any other subpackage (``from qsrv.store import NodeStore``);
- any top-level module of qsrv, private or not (``qsrv.errors``, ``qsrv._resources``,
  ``qsrv._retry``): these are the shared helpers, one level above every subpackage.

It may not import a private module of another subpackage (``from qsrv.store._node import ...``,
``import qsrv.store._node``), nor a private name of one (``from qsrv.codec import _statevec``).
Top-level modules (``qsrv/__init__.py``, ``qsrv/errors.py``, ...) belong to no subpackage: they
too use only what subpackages export. The rule holds for every import: module-level, inside a
function (lazy) and type-checking only.

No cycles. The imports that run when a module is imported -- module level, including class
bodies, ``try`` and plain ``if`` blocks, but not function bodies and not ``if TYPE_CHECKING:``
blocks -- form a DAG over qsrv's modules. ``from P import m`` depends on the module ``P.m`` when
there is one, else on ``P``; importing ``a.b.c`` also runs the packages ``a.b`` and ``a``, which
count unless the importer is inside them (then they are already being imported).
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import qsrv

ROOT = Path(qsrv.__file__).resolve().parent  # the qsrv/ source directory
PACKAGE = "qsrv"


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).parts]
    parts[-1] = parts[-1].split(".", 1)[0]  # drop .py, .pyi, .cpython-311-x86_64-linux-gnu.so
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _all_modules() -> set[str]:
    """Every importable qsrv module, extension modules (and their stubs) included."""
    names = set(_sources())
    for pattern in ("*.pyi", "*.so", "*.pyd"):
        names.update(_module_name(p) for p in ROOT.rglob(pattern))
    return names


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported from, or ``P.name`` for ``from P import name``
    names: tuple[str, ...]  # for ``from P import a, b``; empty for ``import P``
    line: int
    runtime: bool  # runs when the importer is imported (module level, not TYPE_CHECKING)

    def where(self, sources: dict[str, Path]) -> str:
        return f"{sources[self.importer].relative_to(ROOT.parent)}:{self.line}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"

    def visit(stmts: list[ast.stmt], runtime: bool) -> Iterator[Import]:
        for node in stmts:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, (), node.lineno, runtime)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                names = tuple(a.name for a in node.names)
                yield Import(module, target, names, node.lineno, runtime)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(node.body, False)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.body, False)
                yield from visit(node.orelse, runtime)
            else:  # class bodies, try/if/with/for/while/match blocks: walk what they hold
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    for child in getattr(node, field, None) or ():
                        if isinstance(child, ast.stmt):
                            yield from visit([child], runtime)
                        elif isinstance(child, ast.ExceptHandler | ast.match_case):
                            yield from visit(child.body, runtime)

    yield from visit(tree.body, True)


def _all_imports() -> list[Import]:
    return [imp for module, path in _sources().items() for imp in _imports(module, path)]


def _subpackage(module: str) -> str | None:
    """``X`` for a module in ``qsrv/X/``; None for qsrv's top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[1]).is_dir():
        return parts[1]
    return None


def _private_part(dotted: str) -> bool:
    """Whether ``qsrv.X....`` names something private inside subpackage X."""
    parts = dotted.split(".")
    return (len(parts) >= 3 and parts[0] == PACKAGE and (ROOT / parts[1]).is_dir()
            and any(p.startswith("_") and not p.startswith("__") for p in parts[2:]))


def privacy_violations() -> list[str]:
    sources = _sources()
    found = []
    for imp in _all_imports():
        dotted = [imp.target] if not imp.names else [
            imp.target, *(f"{imp.target}.{n}" for n in imp.names)]
        for name in dotted:
            if not _private_part(name):
                continue
            if name.split(".")[1] != _subpackage(imp.importer):
                found.append(f"{imp.where(sources)}: {imp.importer} imports {name}")
                break
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def runtime_graph() -> dict[str, dict[str, str]]:
    """importer -> {imported module: where}, for imports that run at import time."""
    sources, modules = _sources(), _all_modules()
    graph: dict[str, dict[str, str]] = {m: {} for m in modules}
    for imp in _all_imports():
        if not imp.runtime:
            continue
        targets = []
        if imp.names:
            for name in imp.names:
                sub = f"{imp.target}.{name}"
                targets.append(sub if sub in modules else imp.target)
        else:
            targets.append(imp.target)
        inside = {*_ancestors(imp.importer), imp.importer}
        for target in targets:
            if target not in modules:
                continue  # not qsrv's
            deps = [a for a in _ancestors(target) if a not in inside] + [target]
            for dep in deps:
                if dep != imp.importer:
                    graph[imp.importer].setdefault(dep, imp.where(sources))
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected
    component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                connect(w)
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    found = []
    for component in components:
        members = set(component)
        start = min(component)
        path, seen = [start], {start: 0}
        while True:  # follow edges inside the component until a module repeats
            nxt = min(w for w in graph[path[-1]] if w in members)
            if nxt in seen:
                found.append([*path[seen[nxt]:], nxt])
                break
            seen[nxt] = len(path)
            path.append(nxt)
    return found


def test_no_module_imports_another_subpackages_private_modules() -> None:
    found = privacy_violations()
    assert not found, (
        "import what the other subpackage's __init__ exports (export it there if needed):\n"
        + "\n".join(found))


def test_module_level_imports_form_no_cycle() -> None:
    graph = runtime_graph()
    found = cycles(graph)
    lines = []
    for cycle in found:
        lines.append(" -> ".join(cycle))
        lines.extend(f"    {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(cycle))
    assert not found, "import cycles among qsrv's modules:\n" + "\n".join(lines)


# ---- the checker checks what it should --------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_rules_on_a_made_up_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    _write(tmp_path / "qsrv", {
        "__init__.py": "from qsrv.a import x\n",
        "_helpers.py": "",
        "a/__init__.py": "from qsrv.a._impl import x\n",
        "a/_impl.py": "from qsrv import _helpers\nfrom qsrv.b import y\nx = 1\n",
        "b/__init__.py": (
            "from typing import TYPE_CHECKING\n"
            "from qsrv.b._impl import y\n"
            "if TYPE_CHECKING:\n    from qsrv.a import x\n"
            "def f():\n    from qsrv.a import x\n"
        ),
        "b/_impl.py": (
            "from qsrv.a._impl import x\n"     # private, and a cycle through qsrv.a
            "from qsrv.codec import _native\n"  # a private name of another subpackage
            "from . import _other\n"            # relative, own package: fine
            "y = 2\n"
        ),
        "b/_other.py": "",
        "codec/__init__.py": "",
        "codec/_native.pyi": "",
    })
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "qsrv")
    found = privacy_violations()
    assert [line.split(": ", 1)[1] for line in found] == [
        "qsrv.b._impl imports qsrv.a._impl",
        "qsrv.b._impl imports qsrv.codec._native",
    ]
    graph = runtime_graph()
    assert "qsrv.a" in graph["qsrv.b._impl"] and "qsrv.a._impl" in graph["qsrv.b._impl"]
    assert "qsrv.b._other" in graph["qsrv.b._impl"] and "qsrv.b" not in graph["qsrv.b._impl"]
    assert "qsrv.a" not in graph["qsrv.b"]  # TYPE_CHECKING and function-level imports
    assert "qsrv.codec._native" in graph["qsrv.b._impl"]
    assert cycles(graph) == [["qsrv.a", "qsrv.a._impl", "qsrv.b", "qsrv.b._impl", "qsrv.a"]]
