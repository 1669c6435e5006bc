"""The `payhook` command: serve, worker, db upgrade, event trigger|prune, runs replay.

The operator commands (events, failures, plugins, config) live in payhook.commands.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from click.core import ParameterSource

from payhook import logs
from payhook.commands import config_group, events, failures, plugins_group, reconcile_command
from payhook.commands.common import (
    FiniteFloat,
    days_option,
    echo_lines,
    progress_bar,
    since_option,
    until_option,
)
from payhook.config import Config, ConfigError, load_config
from payhook.plugins.scaffold import plugin
from payhook.server.serving import DEFAULT_HTTP, HTTP_PARSERS
from payhook.store import migrations
from payhook.store.engine import Store

__all__ = ["main"]

LOG_LEVEL_HELP = "debug, info, warning or error; when not given, [logging] level applies."

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="PAYHOOK_CONFIG",
    help="The TOML configuration file (or $PAYHOOK_CONFIG).",
)


@contextmanager
def _config_errors() -> Iterator[None]:
    """Report configuration problems one per line and exit 2, instead of a traceback."""
    try:
        yield
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(2)


def _load(path: str, *, require_secrets: bool = True, check_plugins: bool = False) -> Config:
    """The configuration; `require_secrets=False` for commands that never verify a signature.

    `check_plugins`: a file with problems has its plugins checked too, so that every problem
    is reported at once, as `payhook config check` does.
    """
    from payhook.plugins.host import PluginHost

    check = (lambda config: PluginHost().check_config(config)) if check_plugins else None
    with _config_errors():
        config = load_config(path, require_secrets=require_secrets, check=check)
        _apply_logging(config)
        return config
    raise AssertionError("unreachable")  # for type checkers: _config_errors exits


def _apply_logging(config: Config) -> None:
    """[logging] for commands that log (those with --log-level); a --log-level given wins."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or "log_level" not in ctx.params:
        return
    logs.configure(config.logging, ctx.params["log_level"] if _log_level_given() else None)


def _log_level_given() -> bool:
    """Whether --log-level was given (it then wins over [logging] level)."""
    source = click.get_current_context().get_parameter_source("log_level")
    return source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.version_option(package_name="payhook")
def main() -> None:
    """Receive Stripe webhooks for many tenants and run plugin handlers on them."""


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@click.option("--log-level", default="info", show_default=True, help=LOG_LEVEL_HELP)
@click.option(
    "--worker/--no-worker",
    default=None,
    help="Run handler processing in this process (default: [processing] worker).",
)
@click.option(
    "--http",
    type=click.Choice(HTTP_PARSERS),
    default=DEFAULT_HTTP,
    show_default=True,
    help="HTTP/1.1 parser: httptools (C, faster) or h11 (pure Python). Both bound each "
    "request head (64 KiB, --head-timeout), so one client cannot take the server's memory "
    "or hold connections open.",
)
@click.option(
    "--head-timeout",
    default=10.0,
    show_default=True,
    type=FiniteFloat(min=0, min_open=True),
    help="Seconds a client has to send a request line and headers, counted from connecting "
    "or from the previous answer; then the connection is closed.",
)
@click.option(
    "--limit-concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Answer 503 to new requests while this many connections and requests are open "
    "(default: no limit but the open-file limit).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Receiver processes accepting on the one port, kept running by a supervisor process "
    "(docs/scaling.md#sizing says how many).",
)
def serve(
    config_path: str,
    host: str,
    port: int,
    log_level: str,
    worker: bool | None,
    http: str,
    head_timeout: float,
    limit_concurrency: int | None,
    workers: int,
) -> None:
    """Run the webhook receiver (uvicorn)."""
    import uvicorn

    from payhook.receive.app import create_app
    from payhook.server.operator_listener import with_operator
    from payhook.server.serving import uvicorn_options

    _configure_logging(log_level)
    config = _load(config_path, check_plugins=True)
    if workers > 1:
        from payhook.server.processes import ServeOptions, serve_in_processes

        given = _log_level_given()
        options = ServeOptions(host, port, log_level, given, worker, http, head_timeout, limit_concurrency)
        serve_in_processes(config_path, config, options, workers)
    with _config_errors():
        # An embedded SQLite file is ours to keep current; a shared PostgreSQL is upgraded
        # on purpose, with `payhook db upgrade`, before new code is rolled out.
        app = create_app(config, migrate=config.database.is_sqlite, run_worker=worker)
    app = with_operator(app, config)  # also serves [operator], when configured
    # "auto" picks uvloop when installed (uvicorn[standard]); the parser is chosen by --http.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        loop="auto",
        timeout_graceful_shutdown=30,
        **uvicorn_options(http, head_timeout, limit_concurrency),
    )


@main.command()
@config_option
@click.option("--log-level", default="info", show_default=True, help=LOG_LEVEL_HELP)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=FiniteFloat(min=0),
    help="Seconds to let runs finish after SIGTERM.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes on this configuration, kept running by a supervisor process.",
)
def worker(config_path: str, log_level: str, grace: float, processes: int) -> None:
    """Process handler runs (for running apart from `serve`)."""
    from payhook.receive.app import Payhook

    _configure_logging(log_level)
    config = _load(config_path, check_plugins=True)
    if processes > 1:
        from payhook.server.processes import worker_in_processes

        worker_in_processes(config_path, config, log_level, _log_level_given(), grace, processes)
    with _config_errors():
        payhook = Payhook(config, migrate=config.database.is_sqlite, run_worker=True)
    from payhook.server.processes import run_worker

    run_worker(payhook, grace)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@config_option
def upgrade(config_path: str) -> None:
    """Check the configuration as `serve` does, then apply the core's and installed plugins'
    migrations, naming each revision applied."""
    from payhook.plugins.host import PluginHost

    config = _load(config_path, require_secrets=False, check_plugins=True)
    with _config_errors():
        # The plugins a tenant names must be installed for their tables to be created: the
        # same check, and the same message, as `payhook serve`.
        PluginHost().check_config(config)
    # No store timeout: a migration may rightly take longer than any ingest write.
    store = Store(config.database, timeout=None)
    try:
        applied = _apply_migrations(store)
    finally:
        store.dispose()
    for revision in applied:
        click.echo(f"applied {revision.revision}: {revision.doc}")
    if not applied:
        click.echo("database is up to date; no migrations were needed")


def _apply_migrations(store: Store) -> list[Any]:
    """Upgrade every branch to its head; the revisions that were applied, oldest first."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    locations = migrations.plugin_version_locations()
    script = ScriptDirectory.from_config(migrations.alembic_config(store.engine, locations))

    def applied() -> set[str]:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": migrations.VERSION_TABLE})
            heads = context.get_current_heads()
        return {revision.revision for revision in script.iterate_revisions(heads, "base")} if heads else set()

    before = applied()
    migrations.upgrade(store.engine)
    new = applied() - before
    # walk_revisions goes from the heads down; reversed, each comes after what it revises.
    return [revision for revision in reversed(list(script.walk_revisions())) if revision.revision in new]


@main.group()
def event() -> None:
    """Events: send signed test events, prune old ones."""


@event.command()
@config_option
@click.option("--tenant", required=True, help="The tenant whose first secret signs the event.")
@click.option("--url", help="Where to POST (default: http://127.0.0.1:8000/<tenant>).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON only.")
@click.argument("sample")
def trigger(config_path: str, tenant: str, url: str | None, as_json: bool, sample: str) -> None:
    """POST a signed SAMPLE event (a shipped sample name or a JSON file) to a running payhook.

    Each call gets a fresh event id. Samples: payment_intent.succeeded, charge.refunded.full, ...
    """
    import json

    import httpx

    from payhook.receive.verification import sign
    from payhook.testing.samples import load_event, sample_names

    config = _load(config_path)
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
        click.echo(json.dumps({"status_code": response.status_code, "body": response.json()}))
    else:
        click.echo(f"{response.status_code} {response.text}")
    if response.status_code >= 400:
        sys.exit(1)


@main.group()
def runs() -> None:
    """Handler runs: replay failed (or all) runs."""


@runs.command()
@config_option
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
    import getpass
    import json

    from payhook.ops.replay import ReplaySelection, plan_replay
    from payhook.ops.replay import replay as replay_runs
    from payhook.plugins.host import PluginHost

    config = _load(config_path, require_secrets=False)
    selection = ReplaySelection(
        stripe_event_id=stripe_event_id,
        tenant=tenant,
        event_type=event_type,
        plugin=plugin,
        received_after=since,
        received_before=until,
    )
    store = Store(config.database)
    try:
        if dry_run:
            plan = plan_replay(
                store,
                selection,
                only_failed=not include_succeeded,
                plugins=PluginHost() if include_succeeded else None,
                config=config,
            )
            _show_plan(plan, as_json)
            return
        with progress_bar("re-arming runs") as progress:
            result = replay_runs(
                store,
                selection,
                requested_by=requested_by or f"cli:{getpass.getuser()}",
                only_failed=not include_succeeded,
                plugins=PluginHost() if include_succeeded else None,
                config=config,
                progress=progress,
            )
    finally:
        store.dispose()
    if as_json:
        click.echo(json.dumps({"rearmed": result.rearmed, "created": result.created}))
    else:
        click.echo(f"re-armed {result.rearmed} runs, created {result.created}")


def _show_plan(plan: Any, as_json: bool) -> None:
    """What `runs replay --dry-run` found."""
    import json

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


@event.command()
@config_option
@days_option("--older-than-days", "Prune events received more than N days ago.", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def prune(config_path: str, older_than_days: float, as_json: bool) -> None:
    """Drop payloads and finished runs of old events; their ids still dedupe redeliveries."""
    import json

    from payhook.ops.retention import prune as prune_events

    config = _load(config_path, require_secrets=False)
    store = Store(config.database)
    try:
        with progress_bar("pruning events") as progress:
            result = prune_events(store, older_than_days, progress=progress)
    finally:
        store.dispose()
    if as_json:
        click.echo(json.dumps({"events": result.events, "runs": result.runs}))
    else:
        click.echo(f"pruned {result.events} events and {result.runs} runs")


main.add_command(plugin)
main.add_command(events)
main.add_command(failures)
main.add_command(plugins_group)
main.add_command(config_group)
main.add_command(reconcile_command)
