"""The `payhook` command: the groups and commands of payhook.commands, put together, and
the commands installed plugins add through their `register_commands` hook."""

from __future__ import annotations

import logging

import click

from payhook.commands import (
    config_check,
    db,
    events,
    failures,
    plugins,
    reconcile,
    renamed,
    runs,
    serve,
    worker,
)
from payhook.commands.common import discover_plugins

__all__ = ["PLUGIN_COMMANDS", "add_plugin_commands", "main"]

log = logging.getLogger("payhook.cli")


@click.group()
@click.version_option(package_name="payhook")
def main() -> None:
    """Receive Stripe webhooks for many tenants and run plugin handlers on them."""


main.add_command(serve.serve)
main.add_command(worker.worker)
main.add_command(db.db)
main.add_command(events.events)
main.add_command(failures.failures)
main.add_command(runs.runs)
main.add_command(reconcile.reconcile_command)
main.add_command(plugins.plugins)
main.add_command(config_check.config_group)
# The old spellings, hidden: `payhook event trigger|prune`, `payhook plugin new`.
main.add_command(renamed.event)
main.add_command(renamed.plugin)


def add_plugin_commands(cli: click.Group) -> tuple[dict[str, str], list[str]]:
    """Let each installed plugin add its commands to `cli`.

    Returns the commands added ({name: plugin}) and what went wrong, one line each.

    Nothing a plugin does here may break the command line: a plugin that fails to import is
    left out without a word (`payhook plugins list` shows it), a hook that raises adds
    nothing, and a name the core (or an earlier plugin) uses keeps its first meaning.
    """
    try:
        host = discover_plugins()
    except Exception as exc:  # a plugin whose register_handlers raises, say
        return {}, [f"plugin commands are unavailable: {type(exc).__name__}: {exc}"]
    added: dict[str, str] = {}
    problems = []
    for impl in host.pm.hook.register_commands.get_hookimpls():
        # Each plugin adds to a scratch group first, so that a failing hook adds nothing.
        scratch = click.Group(name=cli.name)
        try:
            impl.function(cli=scratch)
        except Exception as exc:
            problems.append(
                f"plugin {impl.plugin_name!r}: register_commands raised {type(exc).__name__}: {exc}"
            )
            continue
        for name, command in scratch.commands.items():
            if name in cli.commands:
                problems.append(f"plugin {impl.plugin_name!r}: command {name!r} exists already; not added")
            else:
                cli.add_command(command, name)
                added[name] = impl.plugin_name
    return added, problems


# {command: plugin}: documented on the plugin's page, not in docs/cli.md (the core's commands).
PLUGIN_COMMANDS, _problems = add_plugin_commands(main)
for _problem in _problems:
    log.warning("%s", _problem)
