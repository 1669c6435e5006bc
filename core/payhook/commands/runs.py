"""`payhook runs replay`: make failed (or all) handler runs due again."""

from __future__ import annotations

import getpass
import json
from datetime import datetime

import click

from payhook.commands.common import (
    config_option,
    echo_lines,
    load,
    open_store,
    progress_bar,
    since_option,
    until_option,
)
from payhook.ops.replay import ReplayPlan, ReplaySelection, plan_replay
from payhook.ops.replay import replay as replay_runs

__all__ = ["runs"]


@click.group()
def runs() -> None:
    """Handler runs: replay failed (or all) runs."""


@runs.command()
@config_option()
@click.option("--event", "stripe_event_id", help="One Stripe event id (evt_...).")
@click.option("--tenant", help="Only this tenant's runs.")
@click.option("--type", "event_type", help="Stripe event type, e.g. charge.refunded.")
@click.option("--plugin", help="Only this plugin's runs.")
@since_option("Received at or after WHEN: ISO 8601 (UTC unless an offset is given) or relative (3d, 12h).")
@until_option("Received before WHEN: ISO 8601 or relative, as --since.")
@click.option(
    "--include-succeeded",
    is_flag=True,
    help="Also re-run succeeded runs, and create runs for handlers installed since.",
)
@click.option("--by", "requested_by", default=None, help="Who asks (recorded on each run).")
@click.option("--dry-run", is_flag=True, help="List the runs it would re-arm or create, and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def replay(
    config_path: str,
    stripe_event_id: str | None,
    tenant: str | None,
    event_type: str | None,
    plugin: str | None,
    since: datetime | None,
    until: datetime | None,
    include_succeeded: bool,
    requested_by: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Make matching failed and dead runs due now (only those, unless --include-succeeded)."""
    from payhook.plugins.host import PluginHost

    config = load(config_path)
    selection = ReplaySelection(
        stripe_event_id=stripe_event_id,
        tenant=tenant,
        event_type=event_type,
        plugin=plugin,
        received_after=since,
        received_before=until,
    )
    plugins = PluginHost() if include_succeeded else None
    with open_store(config) as store:
        if dry_run:
            plan = plan_replay(
                store, selection, only_failed=not include_succeeded, plugins=plugins, config=config
            )
            _show_plan(plan, as_json)
            return
        with progress_bar("re-arming runs") as progress:
            result = replay_runs(
                store,
                selection,
                requested_by=requested_by or f"cli:{getpass.getuser()}",
                only_failed=not include_succeeded,
                plugins=plugins,
                config=config,
                progress=progress,
            )
    if as_json:
        click.echo(json.dumps({"rearmed": result.rearmed, "created": result.created}))
    else:
        click.echo(f"re-armed {result.rearmed} runs, created {result.created}")


def _show_plan(plan: ReplayPlan, as_json: bool) -> None:
    """What `runs replay --dry-run` found."""
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": True,
                    "rearm": [run.as_json() for run in plan.rearm],
                    "create": [run.as_json() for run in plan.create],
                }
            )
        )
        return
    lines = []
    for run in plan.rearm:
        where = f"{run.tenant} {run.stripe_event_id} {run.plugin} {run.handler}"
        lines.append(f"would re-arm run {run.run_id} ({run.status}): {where}")
    for run in plan.create:
        lines.append(f"would create a run: {run.tenant} {run.stripe_event_id} {run.plugin} {run.handler}")
    lines.append(
        f"dry run: would re-arm {len(plan.rearm)} runs and create {len(plan.create)}; nothing changed"
    )
    echo_lines(lines)
