"""Every hook's documented signature matches its specification in the code (and back).

The docs show each hook as a `@hookspec` stub in a ```python block; this test reads those
stubs and compares them with `inspect.signature` of the real specifications.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

# (page, module holding the hookspecs); plugin pages are checked when the plugin is installed.
PAGES = [
    ("hooks.md", "payhook.plugins.hookspecs"),
    ("plugins/registration.md", "payhook_registration.hookspecs"),
    ("plugins/disputes.md", "payhook_disputes.hookspecs"),
]

CODE_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def documented(page: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """{hook name: (signature text, hookspec options)} from the page's `@hookspec` stubs."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for block in CODE_BLOCK.findall((DOCS / page).read_text(encoding="utf-8")):
        if "@hookspec" not in block:
            continue
        for node in ast.parse(block).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            [decorator] = node.decorator_list
            options = {
                keyword.arg: ast.literal_eval(keyword.value)
                for keyword in (decorator.keywords if isinstance(decorator, ast.Call) else [])
            }
            assert node.name not in found, f"{page} documents {node.name} twice"
            found[node.name] = (_stub_signature(node), options)
    return found


def _stub_signature(node: ast.FunctionDef) -> str:
    params = ", ".join(
        f"{arg.arg}: {ast.unparse(arg.annotation)}" if arg.annotation else arg.arg for arg in node.args.args
    )
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"({params}){returns}"


def _annotation(value: Any) -> str:
    # With postponed annotations (`from __future__ import annotations`) they are source text.
    return (
        ast.unparse(ast.parse(value, mode="eval").body)
        if isinstance(value, str)
        else inspect.formatannotation(value)
    )


def specified(module: ModuleType) -> dict[str, tuple[str, dict[str, Any]]]:
    """{hook name: (signature text, hookspec options)} from the module's hookspecs."""
    found = {}
    for name, func in vars(module).items():
        options = getattr(func, "payhook_spec", None)
        if options is None or not inspect.isfunction(func):
            continue
        signature = inspect.signature(func)
        params = ", ".join(
            f"{p.name}: {_annotation(p.annotation)}" if p.annotation is not p.empty else p.name
            for p in signature.parameters.values()
        )
        returns = (
            ""
            if signature.return_annotation is signature.empty
            else f" -> {_annotation(signature.return_annotation)}"
        )
        found[name] = (f"({params}){returns}", options)
    return found


@pytest.mark.parametrize(("page", "module_name"), PAGES, ids=[page for page, _ in PAGES])
def test_documented_hooks_match_their_specifications(page: str, module_name: str) -> None:
    if module_name.startswith("payhook."):
        module = importlib.import_module(module_name)
    else:  # a plugin's: its own tox env may not install it
        module = pytest.importorskip(module_name, reason=f"{module_name.split('.')[0]} is not installed")
    docs, code = documented(page), specified(module)

    assert sorted(docs) == sorted(code), f"{page} and {module_name} name different hooks"
    for name, (signature, options) in code.items():
        doc_signature, doc_options = docs[name]
        assert doc_signature == signature, f"{page}: {name}{doc_signature} != code {name}{signature}"
        for option in ("firstresult", "historic"):
            assert doc_options.get(option, False) == bool(options.get(option)), f"{page}: {name} {option}"


def test_the_check_notices_a_drifted_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (DOCS / "hooks.md").read_text(encoding="utf-8")
    drifted = page.replace(
        "def event_stored(event: StoredEvent, tenant: TenantConfig)", "def event_stored(event)"
    )
    assert drifted != page
    (tmp_path / "hooks.md").write_text(drifted, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "DOCS", tmp_path)
    with pytest.raises(AssertionError, match="event_stored"):
        test_documented_hooks_match_their_specifications("hooks.md", "payhook.plugins.hookspecs")
