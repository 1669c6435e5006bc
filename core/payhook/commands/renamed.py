"""The old spellings of renamed commands, kept working for scripts and timers.

`payhook event trigger|prune` is now `payhook events trigger|prune`, and `payhook plugin new`
is `payhook plugins new`. The old groups are hidden from help; each run of one says its new
name on stderr, and then runs the very same command.
"""

from __future__ import annotations

import click

from payhook.commands.events import events
from payhook.commands.plugins import plugins

__all__ = ["event", "plugin"]


def renamed_group(old: str, new: click.Group, names: list[str]) -> click.Group:
    """A hidden group `old` holding `new`'s commands `names`, warning before each runs."""

    @click.pass_context
    def warn(ctx: click.Context) -> None:
        # Runs before the subcommand parses its arguments, so even a mistyped call says it.
        click.echo(
            f"`payhook {old} {ctx.invoked_subcommand}` is now `payhook {new.name} {ctx.invoked_subcommand}`; "
            "the old name will go in a later release",
            err=True,
        )

    return click.Group(
        old,
        commands={name: new.commands[name] for name in names},
        callback=warn,
        hidden=True,
        help=f"Deprecated: now `payhook {new.name}`.",
    )


event = renamed_group("event", events, ["trigger", "prune"])
plugin = renamed_group("plugin", plugins, ["new"])
