"""The package's layers, read from its imports with ``ast`` (STYLE.md, "Package layout").

Every import counts: at the top, inside functions, under ``TYPE_CHECKING``. A module imports
only from its own layer or the layers below; no modules import each other in a circle; no
module takes another module's ``_private`` name; the simulator is a leaf.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import comfynb

PACKAGE = Path(comfynb.__file__).parent

#: Lowest first. A module's layer is that of the longest prefix that names it.
LAYERS: dict[str, int] = {
    "comfynb.errors": 0,
    "comfynb.core": 0,
    "comfynb.protocol": 1,
    "comfynb.workflows": 1,
    "comfynb.client": 2,
    "comfynb.files": 2,
    "comfynb.store": 2,
    "comfynb.jobs": 3,
    "comfynb.worker": 4,
    "comfynb.service": 4,
    "comfynb.views": 5,
    "comfynb.cli": 6,
    "comfynb.demo": 6,
    "comfynb": 6,  # the package's face: public names, lazily
    "comfynb.simulator": -1,  # a leaf: imports nothing of the rest
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports(path: Path, root: Path, known: set[str]) -> Iterator[tuple[str, str, int]]:
    """Yield (imported module, name taken or "", line) for every comfynb import in ``path``."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    modules: dict[str, str] = {}  # local name -> comfynb module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "comfynb":
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "comfynb":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from . import files`: the module itself
                    modules[alias.asname or alias.name] = sub
                    yield sub, "", node.lineno
                else:
                    yield target, alias.name, node.lineno
    # `files._decoded(...)`: a private name taken through the module
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield modules[node.value.id], node.attr, node.lineno


def graph(root: Path) -> dict[str, list[tuple[str, str, int]]]:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(paths)
    return {name: list(imports(path, root, known)) for name, path in sorted(paths.items())}


def problems(root: Path) -> list[str]:
    """Every broken rule in the package at ``root``, one line each."""
    found = []
    edges = graph(root)
    for source, targets in edges.items():
        for target, name, line in targets:
            where = f"{source}:{line}"
            if target == source:
                continue
            low, high = layer(target), layer(source)
            if (low == -1) != (high == -1) and source not in (
                "comfynb",
                "comfynb.cli",
                "comfynb.demo",
            ):
                found.append(f"{where} crosses the simulator's edge: imports {target}")
            elif low > high:
                found.append(f"{where} imports {target} from a higher layer ({high} -> {low})")
            if name.startswith("_") and not name.startswith("__"):
                found.append(f"{where} takes {target}'s private name {name}")
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return found


def cycles(edges: dict[str, list[tuple[str, str, int]]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    result = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target, _, _ in edges.get(node, []):
            if target not in edges or target == node:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                result.append([*sorted(group), sorted(group)[0]])

    for node in edges:
        if node not in index:
            visit(node)
    return result


def test_the_package_keeps_its_layers() -> None:
    assert problems(PACKAGE) == []


def test_every_module_has_a_layer() -> None:
    for name in graph(PACKAGE):
        assert layer(name) in range(-1, 7), name


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # the checker itself can fail: an upward import inside a function
        (
            {
                "core/models.py": "def f():\n    from ..jobs import enqueue\n",
                "jobs/__init__.py": "def enqueue(): ...\n",
            },
            "comfynb.core.models:2 imports comfynb.jobs from a higher layer (0 -> 3)",
        ),
        # under TYPE_CHECKING counts too, and so does a cycle in one layer
        (
            {
                "client/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n",
                "client/b.py": "from .a import Y\n",
            },
            "import cycle: comfynb.client.a -> comfynb.client.b -> comfynb.client.a",
        ),
        (
            {"store/x.py": "from ..client.base import _tls\n", "client/base.py": "_tls = 1\n"},
            "comfynb.store.x:1 takes comfynb.client.base's private name _tls",
        ),
        (
            {
                "worker/x.py": "from ..jobs import run as r\nr._go()\n",
                "jobs/run.py": "def _go(): ...\n",
            },
            "comfynb.worker.x:2 takes comfynb.jobs.run's private name _go",
        ),
        (
            {"simulator/app.py": "from ..store import Store\n", "store/__init__.py": ""},
            "comfynb.simulator.app:1 crosses the simulator's edge: imports comfynb.store",
        ),
    ],
)
def test_the_checker_sees_each_kind_of_break(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    root = tmp_path / "comfynb"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(root).parents:
            (root / folder / "__init__.py").touch()
        path.write_text(text)
    assert expected in problems(root)
