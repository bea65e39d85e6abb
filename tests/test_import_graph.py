"""The runtime package's shape: imports point one way, modules stay small, no workstation code.

Every module of ``edgead/`` is parsed (not imported) and its imports -- at the top and inside
functions alike -- become edges of a graph of edgead's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgead

PACKAGE = Path(edgead.__file__).resolve().parent
MAX_LINES = 400
# top-level names the runtime must never import: torch, and the workstation package
FORBIDDEN = {"torch", "torchvision", "edgead_export", "export"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported_names(path: Path, name: str) -> set[str]:
    """Every dotted name ``path`` (module ``name``) imports; ``from X import Y`` gives X and X.Y."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (a package stands for its __init__).
    Importing ``a.b.c`` also runs ``a.b``'s __init__: an edge too, unless ``a.b`` is the
    importer's own package (which is being imported already)."""
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges = set()
        for target in imported_names(path, name):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in mods and prefix not in own and prefix != name:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_the_line_limit():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def test_runtime_never_imports_torch_or_the_workstation_package():
    bad = {name: sorted(t for t in imported_names(path, name) if t.split(".")[0] in FORBIDDEN)
           for name, path in modules().items()}
    bad = {name: targets for name, targets in bad.items() if targets}
    assert not bad, f"runtime modules importing workstation code: {bad}"


# -- the checks themselves, on a small package written here --------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_cycle_is_found(tmp_path):
    root = _package(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.sub.c import g\n",  # inside a function counts too
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import x\n",  # relative
        "d.py": "import pkg.a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.d"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


def test_a_package_init_counts_and_its_own_modules_do_not_loop(tmp_path):
    root = _package(tmp_path, {
        "sub/__init__.py": "from pkg.sub.impl import thing\n",  # re-exports its module
        "sub/impl.py": "from pkg.sub import other\nthing = 1\n",  # its own package: no edge
        "sub/other.py": "",
        "user.py": "from pkg.sub.impl import thing\n",  # runs pkg.sub's __init__ first
    })
    graph = import_graph(root)
    assert graph["pkg.user"] == {"pkg.sub", "pkg.sub.impl"}
    assert graph["pkg.sub.impl"] == {"pkg.sub.other"}
    assert find_cycle(graph) is None
    (root / "sub" / "other.py").write_text("import pkg.user\n")
    assert find_cycle(import_graph(root)) is not None


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_forbidden_imports_are_seen(tmp_path, name):
    root = _package(tmp_path, {"m.py": f"def load():\n    import {name}.x as y\n"})
    assert any(t.split(".")[0] == name for t in imported_names(root / "m.py", "pkg.m"))
