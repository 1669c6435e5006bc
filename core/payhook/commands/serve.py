"""`payhook serve`: the webhook receiver, in one process or several."""

from __future__ import annotations

import click

from payhook.commands.common import FiniteFloat, config_errors, config_option, discover_plugins, load
from payhook.commands.log_level import apply_logging, log_level_given, log_level_option, start_logging
from payhook.server.serving import DEFAULT_HTTP, HTTP_PARSERS

__all__ = ["serve"]


@click.command()
@config_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@log_level_option()
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

    start_logging(log_level)
    config = load(config_path, require_secrets=True, plugins=discover_plugins())
    apply_logging(config, log_level)
    if workers > 1:
        from payhook.server.processes import ServeOptions, serve_in_processes

        options = ServeOptions(
            host, port, log_level, log_level_given(), worker, http, head_timeout, limit_concurrency
        )
        serve_in_processes(config_path, config, options, workers)
    with config_errors():
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
