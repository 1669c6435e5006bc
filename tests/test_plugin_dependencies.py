"""Every distribution a bundled plugin declares, the plugin imports.

An unused dependency is still installed, resolved and kept patched by everyone who installs
the plugin. The lint env runs this file on its own (`pytest --noconftest`): it reads the
plugins' sources and pyprojects, and needs neither payhook nor the plugins installed.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
PLUGIN_PYPROJECTS = sorted(PLUGINS_DIR.glob("*/pyproject.toml"))
# An empty parametrization would only be a skip; a lost plugins/ folder must fail.
assert PLUGIN_PYPROJECTS, f"no bundled plugins found in {PLUGINS_DIR}"

# Distributions whose top-level module is not their normalised name (none yet).
IMPORT_NAME_OF_DISTRIBUTION: dict[str, str] = {}


def import_name(requirement: str) -> str:
    """`httpx>=0.27` -> `httpx`; `payhook[testing]` -> `payhook`; `Foo.Bar-baz` -> `foo_bar_baz`."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"not a PEP 508 requirement: {requirement!r}"
    distribution = re.sub(r"[-_.]+", "-", match.group()).lower()
    return IMPORT_NAME_OF_DISTRIBUTION.get(distribution, distribution.replace("-", "_"))


def imported_modules(*folders: Path) -> set[str]:
    """Top-level names of every absolute import in the folders' Python files."""
    modules: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.partition(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.partition(".")[0])
    return modules


@pytest.mark.parametrize("pyproject", PLUGIN_PYPROJECTS, ids=lambda path: path.parent.name)
def test_every_declared_dependency_is_imported(pyproject: Path) -> None:
    plugin = pyproject.parent
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    in_package = imported_modules(plugin / "src")
    # An extra (such as `testing`) may be used by the plugin's tests rather than its package.
    in_package_or_tests = in_package | imported_modules(plugin / "tests")

    unused = [req for req in project.get("dependencies", []) if import_name(req) not in in_package]
    unused += [
        f"{req} (extra {extra!r})"
        for extra, requirements in project.get("optional-dependencies", {}).items()
        for req in requirements
        if import_name(req) not in in_package_or_tests
    ]

    assert unused == [], f"{project['name']} declares dependencies it never imports: {unused}"
