"""`payhook events list|show|trigger|prune`: what arrived, one event in full, a signed test
event sent, old payloads dropped."""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    LIMIT_MAX,
    config_option,
    days_option,
    echo_json,
    echo_lines,
    fail,
    json_option,
    limit_option,
    load,
    open_store,
    printable,
    progress_bar,
    since_option,
    table,
    when,
)
from payhook.ops.event_reports import EVENT_STATUSES, EventDetail, EventFilter, find_events, list_events

__all__ = ["events"]


@click.group()
def events() -> None:
    """Events: list and show stored ones, send a signed test one, prune old ones."""


@events.command("list")
@config_option()
@click.option("--tenant", help="Only this tenant's events.")
@click.option("--type", "event_type", help="Only events of this Stripe type, e.g. charge.refunded.")
@click.option(
    "--status",
    type=click.Choice(EVENT_STATUSES),
    help="Only events with this overall status (the most urgent of their runs' statuses).",
)
@since_option(
    "Only events received at or after WHEN: ISO 8601 (2027-05-01T12:00) or relative (3d, 12h, 30m)."
)
@limit_option(50, f"Show at most this many events (1 to {LIMIT_MAX}).")
@json_option
def list_events_command(
    config_path: str,
    tenant: str | None,
    event_type: str | None,
    status: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored events, newest first."""
    config = load(config_path)
    selection = EventFilter(tenant=tenant, type=event_type, status=status, since=since, limit=limit)
    with open_store(config) as store:
        found = list_events(store, selection)
    if as_json:
        echo_json([event.as_json() for event in found])
        return
    if not found:
        click.echo("no events match", err=True)
        return
    rows = [[when(e.received_at), e.tenant, e.type, e.status, e.runs, e.stripe_event_id] for e in found]
    click.echo(table(["received (UTC)", "tenant", "type", "status", "runs", "event"], rows))


@events.command("show")
@config_option()
@click.option("--tenant", help="The tenant that received the event (needed when several did).")
@json_option
@click.argument("event_id")
def show_event(config_path: str, tenant: str | None, as_json: bool, event_id: str) -> None:
    """Show one event: its payload, its runs and every failed attempt with its traceback.

    EVENT_ID is Stripe's event id (evt_...).
    """
    config = load(config_path)
    with open_store(config) as store:
        found = find_events(store, event_id, tenant)
    if not found:
        where = f" for tenant {tenant!r}" if tenant else ""
        fail(f"no event {event_id!r}{where} is stored", EXIT_PROBLEM)
    if len(found) > 1:
        tenants = ", ".join(detail.summary.tenant for detail in found)
        raise click.UsageError(
            f"event {printable(event_id)} was received by several tenants ({tenants}); pick one with --tenant"
        )
    [detail] = found
    if as_json:
        echo_json(detail.as_json())
    else:
        echo_lines(render_event(detail))


@events.command()
@config_option()
@click.option("--tenant", required=True, help="The tenant whose first secret signs the event.")
@click.option("--url", help="Where to POST (default: http://127.0.0.1:8000/<tenant>).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON only.")
@click.argument("sample")
def trigger(config_path: str, tenant: str, url: str | None, as_json: bool, sample: str) -> None:
    """POST a signed SAMPLE event (a shipped sample name or a JSON file) to a running payhook.

    Each call gets a fresh event id. Samples: payment_intent.succeeded, charge.refunded.full, ...
    """
    import httpx

    from payhook.receive.verification import sign
    from payhook.testing.samples import load_event, sample_names

    config = load(config_path, require_secrets=True)
    if tenant not in config.tenants:
        raise click.BadParameter(f"no tenant {tenant!r} in {config_path}", param_hint="--tenant")
    try:
        payload = load_event(sample)
    except FileNotFoundError:
        known = ", ".join(sample_names())
        raise click.BadParameter(f"no sample or file {sample!r}; samples: {known}") from None
    body = json.dumps(payload).encode()
    headers = {
        "Stripe-Signature": sign(body, config.tenants[tenant].webhook_secrets[0]),
        "Content-Type": "application/json",
    }
    target = url or f"http://127.0.0.1:8000/{tenant}"
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=10)
    except httpx.TransportError as exc:
        raise click.ClickException(f"could not reach {target}: {exc}") from None
    if as_json:
        try:
            answer = response.json()
        except ValueError:  # not payhook's answer (a proxy's error page, say): as it came
            answer = response.text
        click.echo(json.dumps({"status_code": response.status_code, "body": answer}))
    else:
        click.echo(f"{response.status_code} {response.text}")
    if response.status_code >= 400:
        sys.exit(EXIT_PROBLEM)


@events.command()
@config_option()
@days_option("--older-than-days", "Prune events received more than N days ago.", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def prune(config_path: str, older_than_days: float, as_json: bool) -> None:
    """Drop payloads and finished runs of old events; their ids still dedupe redeliveries."""
    from payhook.ops.retention import prune as prune_events

    config = load(config_path)
    with open_store(config) as store, progress_bar("pruning events") as progress:
        result = prune_events(store, older_than_days, progress=progress)
    if as_json:
        click.echo(json.dumps({"events": result.events, "runs": result.runs}))
    else:
        click.echo(f"pruned {result.events} events and {result.runs} runs")


def render_event(detail: EventDetail) -> list[str]:
    """The lines of `events show`, unescaped: print them with `echo_lines`."""
    event = detail.summary
    facts = [
        ("event", event.stripe_event_id),
        ("tenant", event.tenant),
        ("type", event.type),
        ("status", event.status),
        ("received", f"{when(event.received_at)} UTC"),
        ("created", f"{when(detail.created)} UTC"),
        ("livemode", str(event.livemode).lower()),
        (
            "api version",
            (detail.api_version or "-") + (" (not the tenant's)" if detail.api_version_mismatch else ""),
        ),
        ("account", detail.account or "-"),
        ("object", detail.object_id or "-"),
        ("source", detail.source),
        ("secret", detail.signed_with),
    ]
    if detail.ignored_reason:
        facts.append(("ignored", detail.ignored_reason))
    width = max(len(name) for name, _ in facts)
    lines = [f"{name.ljust(width)}  {value}" for name, value in facts]
    lines.append("")
    lines.append(
        f"runs ({len(detail.runs)})" if detail.runs else "runs: none (no enabled plugin handles this type)"
    )
    for run in detail.runs:
        lines.append(f"  run {run.id}  {run.plugin}  {run.handler}  {run.status}  attempts {run.attempts}")
        if run.next_attempt_at is not None and run.status in ("pending", "failed"):
            lines.append(f"    next attempt {when(run.next_attempt_at)} UTC")
        if run.replay_count:
            lines.append(f"    replayed {run.replay_count} time(s), last by {run.replayed_by}")
        if run.last_error and run.status == "skipped":
            lines.append(f"    skipped: {run.last_error}")
        for failure in run.failures:
            lines.append(
                f"    attempt {failure.attempt} failed at {when(failure.failed_at)} UTC: "
                f"{failure.error_type}: {failure.message}"
            )
            # Split on "\n" only, so other control characters stay in a line and are escaped.
            lines.extend(f"      {line}" for line in failure.traceback.rstrip().split("\n"))
    lines.append("")
    if detail.payload:
        lines.append("payload")
        lines.extend(json.dumps(json.loads(detail.payload), indent=2).split("\n"))
    else:
        lines.append(f"payload: pruned at {when(detail.pruned_at)} UTC")
    return lines
