"""Every third-party module `src/` imports is a declared dependency, and the floors keep out the
versions with known vulnerabilities (docs/security.md#dependencies).

An import that is not declared works on the developer's machine (something else pulled it in) and
breaks a fresh install; a floor below a fixed CVE lets a resolver pick the vulnerable release."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).parents[1]
# Distribution -> the lowest version without the known vulnerabilities (docs/security.md).
SAFE_FLOORS = {
    "pillow": "12.2",
    "python-multipart": "0.0.27",
    "starlette": "0.49.1",
    "h11": "0.16",
}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    return {normalised(requirement.name): requirement for requirement in map(Requirement, lines)}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> the files of src/ that import it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "scinsearch":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_in_src_is_a_declared_dependency():
    imports = third_party_imports()
    assert {"PIL", "fastapi", "torch", "python_multipart"} <= set(imports)  # the scan sees the code
    declared = declared_requirements()
    distributions = importlib.metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in imports.items()
        if not any(normalised(d) in declared for d in distributions.get(module, []))
    }
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_floors_exclude_the_vulnerable_versions_and_the_installed_ones_satisfy_them():
    declared = declared_requirements()
    for name, safe in SAFE_FLOORS.items():
        assert name in declared, f"{name} is not declared"
        floors = [Version(spec.version) for spec in declared[name].specifier if spec.operator in (">=", "==", "~=")]
        assert floors and min(floors) >= Version(safe), f"{name}: {declared[name].specifier} allows < {safe}"
    for name, requirement in declared.items():
        if requirement.marker is None or requirement.marker.evaluate():
            try:
                installed = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue  # an extra that is not installed here (e.g. the test tools on a bare install)
            assert requirement.specifier.contains(installed, prereleases=True), f"{name} {installed} vs {requirement}"
