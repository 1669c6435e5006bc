"""payhook's public surface: what plugins and hosts import, pinned."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import payhook
import pytest

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    "Config",
    "ConfigError",
    "Event",
    "GiveUp",
    "HandlerContext",
    "HandlerFunc",
    "InvalidSetting",
    "PayhookApp",
    "PluginHost",
    "Register",
    "RetryLater",
    "RunStatus",
    "SignatureError",
    "Skip",
    "StoreUnavailable",
    "StoredEvent",
    "TenantConfig",
    "UTCDateTime",
    "UnknownCurrency",
    "create_app",
    "from_minor_units",
    "hookimpl",
    "hookspec",
    "load_config",
    "quantize",
    "sign",
    "to_minor_units",
    "utcnow",
    "verify_signature",
]


# Modules plugins may import besides `payhook` itself, with the names they must keep.
PUBLIC_MODULES = {
    "payhook.sql": ["Compiled", "Statement", "insert_keys"],
    "payhook.testing": [
        # What plugins' tests import (docs/writing-a-plugin.md, the scaffold's tests).
        "FailedAttempt",
        "MakePayhook",
        "PayhookHarness",
        "Run",
        "StripeAPIRouter",
        "StripeEventFactory",
        "assert_migrations_match",
        "fresh_event_id",
        "load_event",
        "load_thin_event",
        "store_backends",
        "wait_until",
    ],
}


def test_all_is_pinned_and_sorted() -> None:
    assert set(PUBLIC) <= set(payhook.__all__), "a public name was removed"
    assert payhook.__all__ == sorted(payhook.__all__)


@pytest.mark.parametrize("name", sorted(payhook.__all__))
def test_public_names_say_they_are_payhooks(name: str) -> None:
    value = getattr(payhook, name)
    if isinstance(value, type) or inspect.isfunction(value):
        assert value.__module__ == "payhook", f"payhook.{name} reports {value.__module__}"


def test_stored_error_types_use_public_names() -> None:
    from payhook.execute.processing import qualified_name

    assert qualified_name(payhook.GiveUp) == "payhook.GiveUp"
    assert qualified_name(payhook.RetryLater) == "payhook.RetryLater"
    assert qualified_name(ValueError) == "ValueError"


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_public_modules_keep_their_names(module: str) -> None:
    names = set(importlib.import_module(module).__all__)
    assert set(PUBLIC_MODULES[module]) <= names, f"a public name of {module} was removed"


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_every_name_a_public_module_lists_is_there(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert missing == []


# The pages plugin authors work from; every payhook.testing name they show must be there.
AUTHORS_PAGES = ["docs/hooks.md", "docs/writing-a-plugin.md"]


@pytest.mark.parametrize("page", AUTHORS_PAGES)
def test_the_authors_pages_name_only_what_payhook_testing_has(page: str) -> None:
    import payhook.testing
    from payhook.testing import PayhookHarness

    text = (ROOT / page).read_text(encoding="utf-8")
    named = set(re.findall(r"payhook\.testing\.(\w+)", text))
    for grouped, line in re.findall(r"from payhook\.testing import (?:\(([^)]*)\)|([\w ,]*))", text):
        named |= {name.strip() for name in (grouped or line).split(",") if name.strip()}
    # The fixtures' annotations in the examples: the kit's types, not aliases of a page's own.
    named |= set(re.findall(r"\b(?:make_payhook|stripe_event|stripe_api): (\w+)", text))
    methods = set(re.findall(r"\bharness\.(\w+)\(", text))
    assert named or methods, f"{page} names nothing of payhook.testing"
    assert [name for name in sorted(named) if not hasattr(payhook.testing, name)] == []
    assert [name for name in sorted(methods) if not hasattr(PayhookHarness, name)] == []


def _payhook_imports(path: Path) -> list[str]:
    """Every `payhook...` module a source file imports from, except the public ones."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("payhook"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("payhook.")]
    return [module for module in found if module != "payhook" and module not in PUBLIC_MODULES]


def test_bundled_plugins_and_the_template_import_only_public_names() -> None:
    sources = [*ROOT.glob("plugins/*/src/**/*.py"), *ROOT.glob("core/payhook/plugins/template/**/*.tmpl")]
    offenders = {}
    for path in sources:
        if path.suffix == ".tmpl" and not path.name.endswith(".py.tmpl"):
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".tmpl":
            text = text.replace("{{", "").replace("}}", "")
            tmp = path.with_suffix("")
            internal = [
                line for line in text.splitlines() if line.startswith(("from payhook.", "import payhook."))
            ]
            internal = [line for line in internal if line.split()[1] not in PUBLIC_MODULES]
            if internal:
                offenders[str(tmp.relative_to(ROOT))] = internal
            continue
        internal = [m for m in _payhook_imports(path) if not m.startswith(("payhook_",))]
        if internal:
            offenders[str(path.relative_to(ROOT))] = internal
    assert offenders == {}
