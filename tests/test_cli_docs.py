"""docs/cli.md documents every command and every option of `payhook`, and each has help text.

The test walks the click tree: each command must have its own section (a heading naming it,
as `payhook events list`), and each of its options must appear in that section.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from payhook.cli import main

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADING = re.compile(r"^(#+) `(payhook[^`]*)`", re.MULTILINE)


def commands(command: click.Command = main, path: str = "payhook") -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, f"{path} {name}")


def sections() -> dict[str, str]:
    """`payhook events list` -> the text under that heading, up to the next heading."""
    text = CLI_DOC.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    matches = list(HEADING.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        # `payhook --version` is documented under the group's own name.
        name = match.group(2).split(" --")[0].strip()
        found[name] = text[match.end() : end]
    return found


LEAVES = [(path, command) for path, command in commands() if not isinstance(command, click.Group)]


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[path for path, _ in LEAVES])
def test_every_command_and_option_is_documented(path: str, command: click.Command) -> None:
    section = sections().get(path)
    assert section is not None, f"docs/cli.md has no section headed `{path}`"
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("--"):
                assert f"`{name}`" in section, f"docs/cli.md: `{path}` does not document {name}"


def test_the_version_option_is_documented() -> None:
    assert "`payhook --version`" in CLI_DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize(("path", "command"), list(commands()), ids=[path for path, _ in commands()])
def test_every_command_and_option_has_help(path: str, command: click.Command) -> None:
    assert command.help or command.short_help, f"{path} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{path} {param.opts[0]} has no help text"
