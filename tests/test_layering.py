"""The house's shape, pinned: imports flow one way, nothing forms a cycle, and no module but
the settings touches the environment.

Layers, bottom to top (README "Where things live"): a module may import its own package and
the packages of lower layers, never a package beside it or above it. The CLI root is imported
by nothing; the Feast repo imports nothing of ours (Feast loads it by itself).
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

from mmrec.settings import REPO_ROOT

LAYERS: tuple[tuple[str, ...], ...] = (
    ("mmrec",),  # core: settings, vocabulary, errors, file and Feast helpers
    ("datagen", "ingest", "feature_pipelines", "content"),
    ("models", "training_sets"),
    ("training",),
    ("index",),
    ("serving", "analysis"),
    ("simulation",),  # builds and serves bentos; never packed in one
    ("cli",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
FEATURE_REPO = "feature_repo"
# Modules that build a child process's environment may read os.environ; only the settings
# turn it into values, and nothing writes it.
ENV_WRITES = ("__setitem__", "setdefault", "update", "pop", "putenv", "unsetenv")


def modules() -> dict[str, Path]:
    """Every module of the packages above and the feature repo, by dotted name."""
    out = {}
    for package in (*LAYER_OF, FEATURE_REPO):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import in the tree, in functions too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@functools.cache
def import_graph() -> dict[str, set[tuple[int, str]]]:
    """Module -> {(line, imported project module)} (parsed once per session)."""
    known = modules()
    graph: dict[str, set[tuple[int, str]]] = defaultdict(set)
    for name, path in known.items():
        for line, target in imported_names(ast.parse(path.read_text(), str(path))):
            if target in known and target != name:
                graph[name].add((line, target))
    return graph


def imported_packages(module: str) -> set[str]:
    """The project packages `module` imports, directly or through other modules, and its own."""
    graph = {name: {target for _, target in targets} for name, targets in import_graph().items()}
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph.get(name, ())
    return {name.split(".")[0] for name in seen}


def allowed(importer: str, imported: str) -> bool:
    source, target = importer.split(".")[0], imported.split(".")[0]
    if source == target:
        return True
    if source == FEATURE_REPO or target == FEATURE_REPO:
        return False
    return LAYER_OF[target] < LAYER_OF[source]


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(LAYER_OF), f"give {sorted(packages - set(LAYER_OF))} a layer"


def test_imports_point_down_the_layers() -> None:
    wrong = [
        f"{importer}:{line} imports {imported}"
        for importer, targets in sorted(import_graph().items())
        for line, imported in sorted(targets)
        if not allowed(importer, imported)
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph = {name: {target for _, target in targets} for name, targets in import_graph().items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_nothing_imports_the_cli_root() -> None:
    users = [
        name
        for name, targets in import_graph().items()
        if not name.startswith("cli") and any(t.startswith("cli") for _, t in targets)
    ]
    assert not users, f"the CLI root is imported by {users}"


def _environ_writes(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ENV_WRITES:
                target = node.func.value
        elif isinstance(node, ast.Assign | ast.Delete):
            for t in node.targets:
                if isinstance(t, ast.Subscript):
                    target = t.value
        if target is not None and ast.unparse(target) in ("os.environ", "os"):
            lines.append(node.lineno)
    return lines


def test_no_module_writes_the_environment() -> None:
    writes = {
        name: lines
        for name, path in modules().items()
        if (lines := _environ_writes(ast.parse(path.read_text())))
    }
    assert not writes, f"os.environ written at {writes}: pass Settings down instead"


@pytest.mark.parametrize(
    ("code", "writes"),
    [
        ("os.environ['A'] = '1'", True),
        ("os.environ.setdefault('A', '1')", True),
        ("os.putenv('A', '1')", True),
        ("value = os.environ.get('A')", False),
        ("env = {**os.environ, 'A': '1'}", False),
    ],
)
def test_environment_check_sees_writes(code: str, writes: bool) -> None:
    assert bool(_environ_writes(ast.parse(code))) == writes


def test_the_bento_packs_exactly_what_the_service_imports() -> None:
    """The service's transitive imports are the packages `[tool.bentoml.build] include`
    names: no training loops, data generation or training-set builders in the bento."""
    import tomllib

    needed = imported_packages("serving.service")
    build = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["bentoml"]["build"]
    packed = {pattern.split("/")[0] for pattern in build["include"]}
    assert needed == packed
    assert not needed & {"training", "training_sets", "datagen", "cli"}
