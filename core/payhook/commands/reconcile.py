"""`payhook reconcile`: list each tenant's events from Stripe and store those never received."""

from __future__ import annotations

from datetime import datetime

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    EXIT_USAGE,
    config_option,
    discover_plugins,
    echo_json,
    echo_lines,
    fail,
    json_option,
    load,
    open_store,
    parse_since,
    since_option,
    table,
)
from payhook.ops.reconcile import TenantReconcile, reconcile

__all__ = ["reconcile_command"]

DEFAULT_SINCE = "3d"


@click.command("reconcile")
@config_option()
@click.option("--tenant", help="Only this tenant (default: every active tenant).")
@since_option(
    "List events created at or after WHEN: ISO 8601 (2027-05-01T12:00) or relative (3d, 12h, 30m). "
    f"Default: {DEFAULT_SINCE}. Stripe keeps events for 30 days."
)
@json_option
def reconcile_command(config_path: str, tenant: str | None, since: datetime | None, as_json: bool) -> None:
    """Store the events Stripe created that payhook never received, with their runs.

    Exits 1 when a tenant failed (an API error left after the SDK's retries, a call over
    [stripe] timeout, a page that makes no progress, no API key, an event payhook cannot
    store or that exceeds [ingest] max_body_bytes); what was stored before stays stored.
    """
    from payhook.stripe_api.clients import StripeClients

    # Runs are created for the tenants' plugins: they must be installed, as for serve.
    host = discover_plugins()
    config = load(config_path, plugins=host)
    if tenant is not None and tenant not in config.tenants:
        fail(f"no tenant {tenant!r} in {config.source}", EXIT_USAGE)
    clients = StripeClients(config.stripe)
    try:
        with open_store(config) as store:
            reports = reconcile(
                config,
                store,
                host,
                clients,
                since=since or parse_since(DEFAULT_SINCE),
                tenants=None if tenant is None else [tenant],
            )
    finally:
        clients.close()
    _show(reports, as_json)
    if not all(report.ok for report in reports):
        raise SystemExit(EXIT_PROBLEM)


def _show(reports: list[TenantReconcile], as_json: bool) -> None:
    if as_json:
        echo_json([report.as_json() for report in reports])
        return
    rows = [[r.tenant, r.listed, r.new, r.known, r.failed, r.refused, r.pages] for r in reports]
    click.echo(table(["tenant", "listed", "new", "known", "failed", "refused", "pages"], rows))
    # Problems quote what the API sent (event ids): printed escaped, one line each.
    for report in reports:
        problems = [*report.problems, *([report.error] if report.error is not None else [])]
        if problems:
            echo_lines([f"error: {report.tenant}: {problem}" for problem in problems], err=True)
