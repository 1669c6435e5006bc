"""The core's shape, held by tests: stages layered as docs/architecture.md draws them, no
import cycles (type-only ones included), and no module using another's `_private` names.

The layers are import-linter contracts in pyproject.toml (`lint-imports` checks them from the
command line too); the cycles and private names are read here from the code itself.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core" / "payhook"

# Private names of other libraries that payhook uses on purpose, each with the reason; the
# library's version is bounded in pyproject.toml and the tox env `latest` tries the newest.
ALLOWED_FOREIGN_PRIVATE = {
    # Events are built through the SDK's own constructors without a requestor per event.
    "_construct_from": "stripe",
    "_refresh_from": "stripe",
    "_data": "stripe",
    "_requestor": "stripe",
    "_global_instance": "stripe",
    "_api_requestor": "stripe",
    "_APIRequestor": "stripe",
    # Public despite the underscore: namedtuple's (and so SQLAlchemy Row's) documented API,
    # and the documented exit that does not wait for threads.
    "_asdict": "collections",
    "_exit": "os",
}


def lint_imports() -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(command), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_stages_keep_their_layers() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr


def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph("payhook", exclude_type_checking_imports=False, cache_dir=None)


def cycles(graph: grimp.ImportGraph) -> Iterator[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a cycle or several."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = [0]

    def visit(module: str) -> Iterator[list[str]]:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                yield from visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                yield sorted(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for module in sorted(graph.modules):
        if module not in index:
            yield from visit(module)


def test_no_import_cycles() -> None:
    graph = import_graph()
    # A package's __init__ that hands names on (payhook itself, payhook.operator) is a face,
    # not a module others depend on for code: an import of it from inside is still counted.
    found = list(cycles(graph))
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(group) for group in found)


def core_modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(CORE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


PRIVATE = re.compile(r"^_[A-Za-z0-9]\w*$")  # _name, not __dunder__


def defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines or assigns, at any depth (its own privates)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    # Names listed in __slots__ are assigned through setattr-free code paths too.
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            for element in ast.walk(node.value):
                if isinstance(element, ast.Constant) and isinstance(element.value, str):
                    names.add(element.value)
    return names


def foreign_private_uses(path: Path, tree: ast.Module) -> Iterator[str]:
    own = defined_names(tree)
    where = path.relative_to(ROOT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (
                    PRIVATE.match(alias.name)
                    and ALLOWED_FOREIGN_PRIVATE.get(alias.name) != (node.module or "").split(".")[0]
                ):
                    yield f"{where}:{node.lineno} imports {node.module}.{alias.name}"
        elif isinstance(node, ast.Attribute) and PRIVATE.match(node.attr):
            if node.attr in own or node.attr in ALLOWED_FOREIGN_PRIVATE:
                continue
            yield f"{where}:{node.lineno} uses .{node.attr}, which {where.name} does not define"


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for path, tree in core_modules() for use in foreign_private_uses(path, tree)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("package", sorted(p.parent.name for p in CORE.glob("*/__init__.py")))
def test_every_package_says_what_it_is_for(package: str) -> None:
    docstring = ast.get_docstring(ast.parse((CORE / package / "__init__.py").read_text()))
    assert docstring and len(docstring.split()) >= 8, f"payhook.{package} needs a docstring"


LINK = re.compile(r"\[`?([\w./]+)`?\]\((\.\./core/payhook/[^)#\s]+)\)")


def test_every_link_in_the_architecture_page_lands_on_the_module_it_names() -> None:
    page = ROOT / "docs" / "architecture.md"
    links = LINK.findall(page.read_text())
    assert len(links) > 60, "the page links each package and module"
    for text, target in links:
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{target} does not exist"
        module = path.relative_to(CORE.parent).with_suffix("").as_posix().replace("/", ".")
        module = module.removesuffix(".__init__")
        named = text.removeprefix("payhook.").removesuffix(".py").replace("/", ".")
        assert module.endswith(named), f"[{text}] -> {target}"


def test_every_core_package_is_on_the_architecture_page() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    for init in CORE.glob("*/__init__.py"):
        assert f"payhook.{init.parent.name}" in text, (
            f"docs/architecture.md does not show payhook.{init.parent.name}"
        )
