"""The docs and the `payhook` command agree, both ways.

docs/cli.md has a section for every command (a heading naming it, as `payhook events list`)
documenting each of its options, and every heading names a command that exists. Every
`payhook ...` command the docs, the READMEs and the Makefile show exists, spelled as it is
now: the old spellings (`payhook event trigger`) only in docs/cli.md's "Renamed commands".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from payhook.cli import PLUGIN_COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
HEADING = re.compile(r"^(#+) `(payhook[^`]*)`", re.MULTILINE)
RENAMED_HEADING = "## Renamed commands"
# Where commands are shown to people: every page, the READMEs, the Makefile's targets.
SHOWN_IN = sorted(
    {
        ROOT / "README.md",
        ROOT / "Makefile",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "plugins").glob("*/README.md"),
        *(ROOT / "core" / "payhook" / "plugins" / "template").rglob("README.md.tmpl"),
    }
)


def commands(
    command: click.Command = main, path: str = "payhook", *, hidden: bool = False
) -> Iterator[tuple[str, click.Command]]:
    """Every command and group under `command`; with `hidden`, the hidden ones (and theirs) too.

    Not the commands plugins add (`register_commands`): their own pages document them.
    """
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if (hidden or not sub.hidden) and not (command is main and name in PLUGIN_COMMANDS):
                yield from commands(sub, f"{path} {name}", hidden=hidden)


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


def renamed_section() -> str:
    text = CLI_DOC.read_text(encoding="utf-8")
    start = text.index(RENAMED_HEADING)
    following = text.find("\n## ", start + len(RENAMED_HEADING))
    return text[start : following if following != -1 else len(text)]


LEAVES = [(path, command) for path, command in commands() if not isinstance(command, click.Group)]
RENAMED = [
    path
    for path, command in commands(hidden=True)
    if path not in dict(commands()) and not isinstance(command, click.Group)
]


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


def test_every_section_names_a_command_that_exists() -> None:
    existing = dict(commands())
    for name in sections():
        assert name in existing, f"docs/cli.md has a section for `{name}`, which is no command"


def test_the_version_option_is_documented() -> None:
    assert "`payhook --version`" in CLI_DOC.read_text(encoding="utf-8")


def test_every_old_spelling_is_hidden_and_noted_as_renamed() -> None:
    assert RENAMED, "the old spellings are gone: drop the section and this test"
    section = renamed_section()
    for path in RENAMED:
        assert f"`{path}`" in section, f"docs/cli.md's {RENAMED_HEADING!r} does not note `{path}`"
    help_text = main.get_help(click.Context(main))
    assert not any(f"  {name} " in help_text for name, sub in main.commands.items() if sub.hidden)


@pytest.mark.parametrize(("path", "command"), list(commands()), ids=[path for path, _ in commands()])
def test_every_command_and_option_has_help(path: str, command: click.Command) -> None:
    assert command.help or command.short_help, f"{path} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{path} {param.opts[0]} has no help text"


# `payhook` as a command: an inline code span starting with it, or in a shell code block or a
# Makefile recipe, a line starting with it (`$ payhook`, `.venv/bin/payhook`) or `payhook`
# followed by one of its commands anywhere (`X=1 $(BIN)/payhook events trigger`, a crontab's
# `payhook  payhook reconcile`), but not `pip install payhook payhook-django`.
INLINE = re.compile(r"`(payhook(?: [^`\n]*)?)`")
RUN_AT_START = re.compile(r"^\s*(?:\$ )?(?:\S*/)?(payhook(?: .*)?)$")
RUN = re.compile(r"(?:^|(?<=[\s/]))(payhook (?:" + "|".join(map(re.escape, main.commands)) + r")\b.*)$")
SHELL_BLOCKS = ("", "sh", "bash", "console", "shell")
WORD = re.compile(r"^[a-z][a-z-]*$")


def shown_commands(text: str, *, makefile: bool) -> Iterator[list[str]]:
    """The words after each `payhook` shown as a command: `payhook events list --json` -> events, list."""
    fence: str | None = None  # the language of the code block the line is in
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = line.strip().strip("`").strip() if fence is None else None
            continue
        shown = [match.group(1) for match in INLINE.finditer(line)]
        if fence in SHELL_BLOCKS or (makefile and line.startswith("\t")):
            command = line.replace("$(BIN)/", "").split(" #")[0]
            run = RUN_AT_START.match(command) or RUN.search(command)
            shown += [run.group(1)] if run else []
        for command in shown:
            leading = []
            for word in command.split()[1:]:
                if not WORD.match(word):
                    break
                leading.append(word)
            yield leading


def resolve(words: list[str]) -> click.Command | None:
    """The command `payhook WORDS...` runs (later words may be its arguments), or None."""
    command: click.Command = main
    for word in words:
        if not isinstance(command, click.Group):
            break
        sub = command.commands.get(word)
        if sub is None:
            return None
        command = sub
    return command


def hidden_on_the_way(words: list[str]) -> bool:
    command: click.Command = main
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            return False
        command = command.commands[word]
        if command.hidden:
            return True
    return False


@pytest.mark.parametrize("page", SHOWN_IN, ids=[str(path.relative_to(ROOT)) for path in SHOWN_IN])
def test_every_command_the_docs_show_exists_as_spelled_now(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    if page == CLI_DOC:
        text = text.replace(renamed_section(), "")
    problems = []
    for words in shown_commands(text, makefile=page.name == "Makefile"):
        shown = " ".join(["payhook", *words])
        if resolve(words) is None:
            problems.append(f"`{shown}` is no command")
        elif hidden_on_the_way(words):
            problems.append(f"`{shown}` is an old spelling (see docs/cli.md, {RENAMED_HEADING!r})")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_docs_check_finds_what_it_looks_for() -> None:
    """The reference check above reads inline code, code blocks and Makefile recipes."""
    text = (
        "Run `payhook events list`.\n```sh\n$ payhook event prune --config F\n# payhook says\n```\n"
        "```python\nfrom payhook import x\n```\n"
        "```\npip install payhook payhook-x\n1 * * * payhook  payhook serve\n```\n"
    )
    makefile = "demo:\n\tX=$(X) $(BIN)/payhook plugin new x\n"
    assert list(shown_commands(text, makefile=False)) == [["events", "list"], ["event", "prune"], ["serve"]]
    assert list(shown_commands(makefile, makefile=True)) == [["plugin", "new", "x"]]
    assert resolve(["events", "list"]) is not None and resolve(["tenants", "list"]) is None
    assert hidden_on_the_way(["event", "prune"]) and not hidden_on_the_way(["events", "prune"])
