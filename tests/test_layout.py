"""The code layout: no module of ``src/lanet`` over 700 lines, and no import cycle among lanet's modules.

The import graph is read with :mod:`ast` (nothing is imported): every ``import`` and ``from ... import`` statement
anywhere in a module (module level, inside functions and classes, under ``if TYPE_CHECKING``), relative or
absolute, is an edge. A package is the module of its ``__init__.py``: ``from . import x`` is an edge to the
submodule ``x`` when there is one, else to the package itself. Imports built at run time
(``importlib.import_module``, such as the method registry's loading of the built-in methods) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 700


def test_no_module_over_700_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted((SRC / "lanet").rglob("*.py"))}
    assert sizes, f"no modules found under {SRC / 'lanet'}"
    long = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by responsibility): {long}"


# ---------------------------------------------------------------------------------------------- import cycles
def module_files(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every ``.py`` file of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (see the module docstring for what counts)."""
    modules = module_files(src, package)

    def existing(name: str) -> str | None:
        """``name`` if it is a module, else its longest prefix that is one (``a.b.attr`` -> ``a.b``)."""
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges: set[str] = set()
        here = name.split(".") if is_package else name.split(".")[:-1]  # the package relative imports start from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [existing(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if node.level - 1 > len(here) - 1:
                        raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                    base = ".".join(here[:len(here) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else existing(base)
                           for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t is not None and t.split(".")[0] == package)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """(one shortest cycle ``[a, b, ..., a]``, every module of the component) per strongly connected component of
    more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:  # a shortest path back to the component's first module, within the component
        start, inside = component[0], set(component)
        parent: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in parent:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & inside):
                    if w not in parent:
                        parent[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while path[-1] != start or len(path) == 1:
            path.append(parent[path[-1]])
        cycles.append((path[::-1], component))
    return cycles


def test_no_import_cycles():
    graph = import_graph(SRC, "lanet")
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100, "the import scan found (almost) nothing"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among lanet's modules:\n" + "\n".join(
        " -> ".join(cycle) + f"  (in a circle of {len(members)}: {', '.join(members)})" for cycle, members in cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_scan_sees_every_kind_of_import(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .a import f\n",  # the package imports a
        "pkg/a.py": "def f():\n    from .sub import b\n",  # function level, a submodule of a subpackage
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from .. import c\nfrom . import helper\n",  # c is a module; helper a name in sub/__init__
        "pkg/c.py": "import pkg.d.attr\nfrom pkg import d as _\nimport os\n",  # absolute, module-then-attribute
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.c", "pkg.sub"},
                     "pkg.c": {"pkg.d"}, "pkg.d": {"pkg.a"}}
    assert find_cycles(graph) == [(["pkg.a", "pkg.sub.b", "pkg.c", "pkg.d", "pkg.a"],
                                   ["pkg.a", "pkg.c", "pkg.d", "pkg.sub.b"])]
    _write(tmp_path, {"pkg/d.py": "X = 1\n"})
    assert find_cycles(import_graph(tmp_path, "pkg")) == []
