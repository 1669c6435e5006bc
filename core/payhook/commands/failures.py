"""`payhook failures`: failed and dead runs, grouped by tenant, plugin and kind of error."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    config_option,
    echo_json,
    json_option,
    load,
    open_store,
    shorten,
    since_option,
    table,
    when,
)
from payhook.ops.failure_reports import failure_groups

__all__ = ["failures"]


@click.command()
@config_option()
@click.option("--tenant", help="Only this tenant's runs.")
@since_option("Only runs whose last attempt ended at or after WHEN: ISO 8601 or relative (3d, 12h, 30m).")
@json_option
def failures(config_path: str, tenant: str | None, since: datetime | None, as_json: bool) -> None:
    """Show failed and dead runs, grouped by tenant, plugin and error; exit 1 if there are any.

    `failed` runs will be retried; `dead` ones wait for a replay (`payhook runs replay`).
    """
    config = load(config_path)
    with open_store(config) as store:
        groups = failure_groups(store, tenant, since)
    if as_json:
        echo_json([group.as_json() for group in groups])
    elif not groups:
        click.echo("no failed or dead runs", err=True)
    else:
        rows = []
        for g in groups:
            error = shorten(f"{g.error_type}: {g.error}", 80)
            rows.append(
                [g.tenant, g.plugin, g.failed, g.dead, when(g.last_failed_at), g.example_event, error]
            )
            if g.example_error != g.error:
                # The pattern masks ids and numbers; one message as it was, on the next line.
                rows.append(["", "", "", "", "", "", shorten(f"e.g. {g.example_error}", 80)])
        click.echo(
            table(["tenant", "plugin", "failed", "dead", "last (UTC)", "example event", "error"], rows)
        )
        click.echo(
            "\ntracebacks: payhook events show EVENT; retry now: payhook runs replay --tenant T --plugin P",
            err=True,
        )
    if groups:
        sys.exit(EXIT_PROBLEM)
