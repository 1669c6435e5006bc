"""docs/configuration.md documents every key the configuration accepts, with its default.

The keys come from the code: each section's dataclass fields, which are what the parser
reads. A key added without documentation, or documented but gone, fails here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
from payhook.config import (
    Config,
    DatabaseConfig,
    IngestConfig,
    LoggingConfig,
    OperatorConfig,
    ProcessingConfig,
    RetryPolicy,
    StripeConfig,
    TenantConfig,
)

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \|", re.MULTILINE)

# heading in the docs -> the dataclasses whose fields are its keys, and fields that are tables
# documented under headings of their own (or not keys at all)
SECTIONS: dict[str, tuple[tuple[type, ...], frozenset[str]]] = {
    "[database]": ((DatabaseConfig,), frozenset()),
    "[ingest]": ((IngestConfig,), frozenset()),
    "[processing]": ((ProcessingConfig,), frozenset({"plugins"})),
    "[tenants.<slug>]": ((TenantConfig,), frozenset({"slug", "plugin_config"})),
    "[operator]": ((OperatorConfig,), frozenset()),
    "[logging]": ((LoggingConfig,), frozenset()),
    "[stripe]": ((StripeConfig,), frozenset()),
}
# Tables documented by a heading and prose rather than a table of their own.
SUBTABLES = {
    "[processing.plugins.<name>]": [item.name for item in fields(RetryPolicy)],
    "[tenants.<slug>.plugin_config.<plugin>]": [],
}


def section(heading: str) -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    match = re.search(rf"^#+ `{re.escape(heading)}`\n(.*?)(?=^#+ |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/configuration.md has no heading `{heading}`"
    return match.group(1)


def declared(classes: tuple[type, ...], skipped: frozenset[str]) -> dict[str, Any]:
    """key -> default (MISSING when the key is required)."""
    keys: dict[str, Any] = {}
    for cls in classes:
        for item in fields(cls):
            if item.name in skipped:
                continue
            if item.default is not MISSING:
                keys[item.name] = item.default
            elif item.default_factory is not MISSING:
                keys[item.name] = item.default_factory()
            else:
                keys[item.name] = MISSING
    return keys


def test_every_section_has_a_heading() -> None:
    sections = {name for name in (item.name for item in fields(Config)) if name != "source"}
    documented = {heading.strip("[]").split(".")[0] for heading in SECTIONS}
    assert sections == documented


@pytest.mark.parametrize("heading", sorted(SECTIONS))
def test_every_key_is_documented_with_its_default(heading: str) -> None:
    classes, skipped = SECTIONS[heading]
    keys = declared(classes, skipped)
    rows = dict(ROW.findall(section(heading)))
    assert set(rows) == set(keys), f"{heading}: documented {sorted(rows)}, accepted {sorted(keys)}"
    for key, cell in rows.items():
        default = keys[key]
        if default is MISSING:
            assert "required" in cell, f"{heading} {key}: say that it is required"
        elif default is None:
            pass  # "not given": the cell says what applies instead, e.g. `[processing] mode`
        else:
            literal = re.fullmatch(r"`([^`]*)`", cell.strip())
            assert literal is not None, f"{heading} {key}: give its default in backticks, not {cell!r}"
            value = tomllib.loads(f"v = {literal.group(1)}")["v"]
            assert value == (list(default) if isinstance(default, tuple) else default), f"{heading} {key}"


@pytest.mark.parametrize("heading", sorted(SUBTABLES))
def test_nested_tables_are_documented(heading: str) -> None:
    text = section(heading)
    for key in SUBTABLES[heading]:
        assert f"`{key}`" in text, f"{heading} does not mention {key}"
