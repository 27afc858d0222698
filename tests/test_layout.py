"""The package's shape: no import circles, every module importable on its own, a light query path."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "scinsearch"


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # runs the CLI when imported
            continue
        parts = ("scinsearch",) + path.relative_to(PACKAGE).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@functools.cache
def import_statements(name: str) -> tuple[tuple[str, ...], ...]:
    """Each scinsearch import statement in module `name`'s file, as the names it may refer to (parsed once
    per run: several tests walk the whole package)."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    statements = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scinsearch"):
            statements.append((*[f"{node.module}.{alias.name}" for alias in node.names], node.module))
        elif isinstance(node, ast.Import):
            statements.append(tuple(alias.name for alias in node.names if alias.name.startswith("scinsearch")))
    return tuple(statements)


def imports_of(name: str, known: set[str]) -> set[str]:
    """The scinsearch modules `name` imports anywhere in its file (module level or inside a function)."""
    found = set()
    for targets in import_statements(name):
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
                break
    return found


def circles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for other in sorted(graph[name]):
            if other in path:
                circles.append(path[path.index(other) :] + [other])
            elif other not in done:
                visit(other, path + [other])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
    return circles


def test_no_module_imports_another_in_a_circle():
    assert circles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    known = set(module_names())
    graph = {name: imports_of(name, known) for name in known}
    assert graph["scinsearch.store.edge"] == {
        "scinsearch.errors",
        "scinsearch.helpers",
        "scinsearch.schema",
        "scinsearch.settings",  # ServerOptions: how a new shard is indexed
        "scinsearch.store.base",
    }
    assert graph["scinsearch.helpers"] == set()  # the lowest module: any module may use it
    assert circles_in(graph) == []


def package_of(name: str) -> str:
    """scinsearch.store.edge -> scinsearch.store; a top-level module is its own unit."""
    parts = name.split(".")
    return ".".join(parts[:2])


def package_graph() -> dict[str, set[str]]:
    known = set(module_names())
    graph: dict[str, set[str]] = {}
    for name in known:
        outer = package_of(name)
        graph.setdefault(outer, set()).update(package_of(t) for t in imports_of(name, known) if package_of(t) != outer)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


# The sub-packages from the bottom up: each may import those before it, never one after it.
LAYERS = ["store", "vectors", "calibration", "evaluation", "finetune", "transfer", "explore", "service", "commands"]


def test_no_package_imports_another_in_a_circle():
    """Collapsed to sub-packages, the imports still form no circle (calibration <-> evaluation once did)."""
    graph = package_graph()
    assert circles_in(graph) == []
    assert "scinsearch.vectors" in graph["scinsearch.calibration"]


def test_sub_packages_import_only_the_layers_below():
    graph = package_graph()
    for index, layer in enumerate(LAYERS):
        above = {f"scinsearch.{name}" for name in LAYERS[index + 1 :]}
        assert graph.get(f"scinsearch.{layer}", set()) & above == set(), layer


def test_search_does_not_reach_training_code():
    """The query path uses the runtime adapter (`vectors.adapter`), never the training modules."""
    known = set(module_names())
    graph = {name: imports_of(name, known) for name in known}
    for start in ("scinsearch.search", "scinsearch.service.app"):
        reached = reachable(graph, start)
        assert not {name for name in reached if name.startswith("scinsearch.finetune")}, start
    assert "scinsearch.vectors.adapter" in reachable(graph, "scinsearch.search")


def test_no_product_module_imports_the_test_scaffolding():
    """`scinsearch.testing` (synthetic data, tiny models, sabotage) is for tests and benchmarks only."""
    known = set(module_names())
    scaffolding = {name for name in known if name == "scinsearch.testing" or name.startswith("scinsearch.testing.")}
    assert {"scinsearch.testing", "scinsearch.testing.sabotage", "scinsearch.testing.planted"} <= scaffolding
    assert "scinsearch.preprocessing" in imports_of("scinsearch.testing.sabotage", known)  # the walk sees imports
    users = {name: imports_of(name, known) & scaffolding for name in sorted(known - scaffolding)}
    assert {name: found for name, found in users.items() if found} == {}


# Checks in a new Python process -------------------------------------------------------------------------
#
# They share one interpreter, run in this order, each from the state it needs: the first starts with nothing
# imported; the second adds the query path to the light modules the first has just proved light (the
# same modules it imports itself); the third clears every scinsearch module before each module it imports
# (the third-party packages stay loaded, as they always did between its modules).

FRESH_CHECKS = {
    "schema_and_rules_light": (
        "import sys, scinsearch.schema, scinsearch.rules\n"
        "heavy = [m for m in ('numpy', 'pandas', 'torch', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    ),
    "query_path_without_pandas": (
        "import sys, scinsearch.search, scinsearch.service.app, scinsearch.schema, scinsearch.rules\n"
        "assert 'pandas' not in sys.modules, 'pandas'\n"
        "assert 'qdrant_client' not in sys.modules, 'qdrant_client'\n"
    ),
    "every_module_on_its_own": (
        "import importlib, sys\n"
        f"for name in {module_names()!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'scinsearch' or m.startswith('scinsearch.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    ),
}

# Each file is compiled once: a module imported again runs its compiled code afresh (as it would from a
# .pyc; with PYTHONDONTWRITEBYTECODE=1 Python would otherwise compile each file again at every import).
FRESH_DRIVER = """
import importlib.machinery, json, sys, traceback
compiled, compile_source = {}, importlib.machinery.SourceFileLoader.source_to_code
def source_to_code(self, data, path, *, _optimize=-1):
    if (path, data) not in compiled:
        compiled[path, data] = compile_source(self, data, path, _optimize=_optimize)
    return compiled[path, data]
importlib.machinery.SourceFileLoader.source_to_code = source_to_code
failures = {}
for name, script in json.loads(sys.argv[1]).items():
    try:
        exec(compile(script, name, "exec"), {"__name__": name})
        failures[name] = ""
    except BaseException:
        failures[name] = traceback.format_exc()[-2000:]
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def fresh_failures() -> dict[str, str]:
    """Each of FRESH_CHECKS run in a new Python process (nothing imported yet): its traceback, or ''."""
    result = subprocess.run(
        [sys.executable, "-c", FRESH_DRIVER, json.dumps(FRESH_CHECKS)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_every_module_imports_on_its_own(fresh_failures):
    """Each module imported first, from a clean slate of scinsearch modules: an import-order circle fails here."""
    assert fresh_failures["every_module_on_its_own"] == ""


def test_query_path_and_service_do_not_load_pandas(fresh_failures):
    assert fresh_failures["query_path_without_pandas"] == ""


def test_schema_and_rules_import_nothing_heavy(fresh_failures):
    assert fresh_failures["schema_and_rules_light"] == ""
