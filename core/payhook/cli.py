"""The `payhook` command: the groups and commands of payhook.commands, put together."""

from __future__ import annotations

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

__all__ = ["main"]


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
