"""The import graph of shvit_edge: no cycle, no private name taken from another module, and data flowing one way
(models -> parity/manifest -> backends -> export -> verify -> bench/cli).

Every ``import`` statement counts, at module level and inside functions alike (a function-level import only hides
a cycle until the function runs); imports under ``if TYPE_CHECKING:`` run never and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shvit_edge"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement of the module ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("shvit_edge"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("shvit_edge"):
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if submodules:  # ``from . import x``: the submodule x is what is imported
                found.extend((m, [], node.lineno) for m in submodules)
                names = [n for n in names if f"{target}.{n}" not in modules]
                if not names:
                    continue
            found.append((target, names, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(name, path, modules):
            while target not in modules and "." in target:  # an attribute of a module, or a name in a package
                target = target.rpartition(".")[0]
            if target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_function_level_imports_and_finds_a_cycle(tmp_path):
    """The checks below are only as good as the walker: it must see an import inside a function, skip one under
    TYPE_CHECKING, resolve relative imports, and find a cycle that runs through them."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n"
              "def f():\n    from .c import _y\n    from . import d\n")
    path = tmp_path / "a.py"
    path.write_text(source)
    modules = {"shvit_edge.pkg.a": path, "shvit_edge.pkg.b": path, "shvit_edge.pkg.c": path,
               "shvit_edge.pkg.d": path}
    found = _imports("shvit_edge.pkg.a", path, modules)
    assert ("shvit_edge.pkg.c", ["_y"], 5) in found and ("shvit_edge.pkg.d", [], 6) in found
    assert not any(target == "shvit_edge.pkg.b" for target, _, _ in found)


def test_no_import_cycle_in_the_package():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (module-level and function-level imports alike): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_from_another():
    modules = _modules()
    taken = [f"{name}:{line} imports {n} from {target}"
             for name, path in modules.items()
             for target, names, line in _imports(name, path, modules)
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert not taken, "\n".join(taken)


#: the layers, lowest first: a module may import its own layer and those below it, never one above
LAYERS = (
    ("shvit_edge.errors", "shvit_edge.bounds", "shvit_edge._strict", "shvit_edge.atomic", "shvit_edge._process",
     "shvit_edge.plugins"),
    ("shvit_edge.models",),
    ("shvit_edge.parity", "shvit_edge.manifest", "shvit_edge.targets", "shvit_edge.images",
     "shvit_edge.backends.registry", "shvit_edge.artifacts"),
    ("shvit_edge.backends", "shvit_edge.quantize"),
    ("shvit_edge.export",),
    ("shvit_edge.verify", "shvit_edge.verify_worker"),
    ("shvit_edge.bench", "shvit_edge.sensitivity", "shvit_edge.pipeline", "shvit_edge.harness", "shvit_edge.cli",
     "shvit_edge.cli_common", "shvit_edge.cli_results", "shvit_edge.cli_device", "shvit_edge.__main__"),
)


def _layer(module: str) -> int | None:
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    return None if best is None else best[0]


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m != "shvit_edge"))
def test_imports_run_one_way(module):
    modules = _modules()
    here = _layer(module)
    assert here is not None, f"{module} is in no layer of LAYERS: place it"
    upward = []
    for target, _, line in _imports(module, modules[module], modules):
        while target not in modules and "." in target:
            target = target.rpartition(".")[0]
        there = _layer(target)
        if target != "shvit_edge" and there is not None and there > here:
            upward.append(f"line {line}: {target} (layer {there} > {here})")
    assert not upward, f"{module} imports upward: " + "; ".join(upward)
