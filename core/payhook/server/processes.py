"""`payhook serve --workers N` and `payhook worker --processes N`: one supervisor, N children.

The parent checks the configuration and the plugins, migrates an SQLite store, and binds the
listening socket, all once and before any child exists; then payhook.supervisor keeps the
children running. Each child is a whole `serve` (or `worker`) of its own: it loads the same
configuration file, builds its own runtime and store connections, and logs with its pid.

On SQLite every process writes the same file, one writer at a time: SQLite's lock, taken
with `BEGIN IMMEDIATE` and a bounded wait (payhook.sqlite), serialises the processes as the
write gate serialises threads inside one. docs/scaling.md says what that means for sizing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NoReturn

import click
import uvicorn
from sqlalchemy.engine import make_url

from payhook import logs
from payhook.config import Config, ConfigError, load_config
from payhook.server.supervisor import Ready, Supervisor, watch_parent
from payhook.store import migrations

if TYPE_CHECKING:
    from payhook.receive.runtime import Payhook

__all__ = ["ServeOptions", "WorkerOptions", "run_worker", "serve_in_processes", "worker_in_processes"]

log = logging.getLogger("payhook.supervisor")

# What a child needs beyond its own graceful shutdown: uvicorn's 30 s for requests in flight,
# then the runtime's stop (ingest drained, up to 30 s for the in-process worker's runs).
SERVE_STOP_TIMEOUT = 90.0
# `payhook worker`'s --grace, plus time to hand runs back and close connections.
WORKER_STOP_MARGIN = 20.0
LISTEN_BACKLOG = 2048  # uvicorn's default
PID_TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class ServeOptions:
    """`payhook serve`'s options, as each receiver process needs them."""

    host: str
    port: int
    log_level: str
    log_level_given: bool
    worker: bool | None
    http: str
    head_timeout: float
    limit_concurrency: int | None


@dataclass(frozen=True)
class WorkerOptions:
    """`payhook worker`'s options, as each worker process needs them."""

    log_level: str
    log_level_given: bool
    grace: float


# -- the parent ---------------------------------------------------------------------------


def serve_in_processes(config_path: str, config: Config, options: ServeOptions, workers: int) -> NoReturn:
    """Bind once, then run `workers` receiver processes on the socket until SIGTERM; exits.

    `config` is the file at `config_path`, loaded and checked, its plugins included.
    """
    _refuse_private_database(config, "--workers")
    with_pid_in_logs()
    _prepare_store(config)
    sock = _listen(options.host, options.port)
    metrics_dir = _shared_metrics_dir(config)
    supervisor = Supervisor(
        "receiver",
        serve_child,
        (config_path, options, sock),
        workers,
        stop_timeout=SERVE_STOP_TIMEOUT,
        # No more children will need it; the children's copies keep it open until each stops.
        on_stop=sock.close,
    )
    log.info("payhook serve on http://%s:%d with %d receiver processes", options.host, options.port, workers)
    try:
        status = supervisor.run()
    finally:
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(status)


def worker_in_processes(config_path: str, config: Config, options: WorkerOptions, processes: int) -> NoReturn:
    """Run `processes` worker processes on one configuration until SIGTERM; exits.

    `config` is the file at `config_path`, loaded and checked, its plugins included.
    """
    _refuse_private_database(config, "--processes")
    with_pid_in_logs()
    _prepare_store(config)
    supervisor = Supervisor(
        "worker",
        worker_child,
        (config_path, options),
        processes,
        stop_timeout=options.grace + WORKER_STOP_MARGIN,
    )
    sys.exit(supervisor.run())


def _refuse_private_database(config: Config, option: str) -> None:
    """An in-memory SQLite database would be a different, empty one in every process."""
    if config.database.is_sqlite and make_url(config.database.url).database in (None, "", ":memory:"):
        message = f"{option} needs a database file: an in-memory SQLite database is private to each process"
        click.echo(f"error: {message}", err=True)
        sys.exit(2)


def _prepare_store(config: Config) -> None:
    """What each process would otherwise do at its start, done once: migrate, or refuse.

    Only an SQLite store is migrated, as a single `serve` does: PostgreSQL is upgraded on
    purpose, with `payhook db upgrade`, and a PostgreSQL database behind the migrations is
    refused before any child starts. The command has checked the plugins already.
    """
    from payhook.store.engine import Store

    store = Store(config.database, timeout=None)
    try:
        if config.database.is_sqlite:
            # upgrade() takes turns with other processes starting on the same new file.
            migrations.upgrade(store.engine)
            return
        # Every child would refuse a database behind the migrations, and the supervisor
        # restart them until it gave up: say it once, here, instead.
        missing = migrations.missing_heads(store.engine, config.enabled_plugins)
    finally:
        store.dispose()
    if missing:
        click.echo(
            f"error: the database schema is not migrated (it lacks {', '.join(missing)}): "
            "run `payhook db upgrade`",
            err=True,
        )
        sys.exit(1)


def _listen(host: str, port: int) -> socket.socket:
    """The socket every receiver accepts from, bound before any of them starts."""
    from payhook.server.serving import listening_socket

    try:
        sock = listening_socket(host, port, LISTEN_BACKLOG)
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sock.set_inheritable(True)
    return sock


def _shared_metrics_dir(config: Config) -> str | None:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the receivers when none is given.

    Only the first receiver serves the operator app; with the directory its `/metrics`
    counts every receiver's deliveries, not only its own.
    """
    from payhook.metrics import MULTIPROC_ENV

    if config.operator is None or os.environ.get(MULTIPROC_ENV):
        return None
    folder = tempfile.mkdtemp(prefix="payhook-metrics-")
    os.environ[MULTIPROC_ENV] = folder  # inherited by the children spawned after this
    return folder


# -- the children -------------------------------------------------------------------------


def serve_child(
    config_path: str, options: ServeOptions, sock: socket.socket, number: int, count: int, ready: Ready
) -> None:
    """One receiver process: `payhook serve`'s app, served from the shared socket."""
    from payhook.receive.app import create_app
    from payhook.server.operator_listener import with_operator
    from payhook.server.serving import uvicorn_options

    config = _child_config(config_path, options.log_level, options.log_level_given)
    watch_parent()
    app = create_app(config, migrate=False, run_worker=options.worker)
    # The operator app has one port: the first receiver serves it (its replacement, if it
    # dies), the others leave it alone.
    app = with_operator(app, config if number == 1 else replace(config, operator=None))
    log.info("receiver %d/%d serving (pid %d)", number, count, os.getpid())
    server = _ReportingServer(
        ready,
        uvicorn.Config(
            app,
            log_level=options.log_level,
            # uvicorn's own lines go through this process's handler, and so name its pid.
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="auto",
            timeout_graceful_shutdown=30,
            **uvicorn_options(options.http, options.head_timeout, options.limit_concurrency),
        ),
    )
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # the lifespan failed; uvicorn has logged why


def worker_child(config_path: str, options: WorkerOptions, number: int, count: int, ready: Ready) -> None:
    """One worker process: `payhook worker` on the same configuration."""
    from payhook.receive.app import Payhook

    config = _child_config(config_path, options.log_level, options.log_level_given)
    watch_parent()
    payhook = Payhook(config, migrate=False, run_worker=True)
    log.info("worker %d/%d running (pid %d)", number, count, os.getpid())
    # Its plugins and store are set up; what is left (starting threads) does not fail.
    ready()
    run_worker(payhook, options.grace)


def run_worker(payhook: Payhook, grace: float) -> None:
    """Run `payhook`'s worker until SIGTERM or SIGINT, then stop it within `grace` seconds."""
    if asyncio.run(_until_stopped(payhook, grace)):
        # Handlers still stuck after the grace period were handed back and can no longer
        # commit; do not wait for their threads.
        logging.shutdown()
        os._exit(0)


async def _until_stopped(payhook: Payhook, grace: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await payhook.start()
    click.echo("payhook worker running; SIGTERM or Ctrl-C stops it", err=True)
    await stop.wait()
    abandoned: int = await payhook.stop(grace)
    return abandoned


class _ReportingServer(uvicorn.Server):
    """uvicorn's server, telling the supervisor once it has started serving."""

    def __init__(self, ready: Ready, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:  # the lifespan (payhook's start) succeeded
            self._ready()


def _child_config(config_path: str, log_level: str, log_level_given: bool) -> Config:
    """The configuration, loaded again in the child, and logging as the parent set it up."""
    logging.basicConfig(level=log_level.upper(), format=PID_TEXT_FORMAT)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        # The parent loaded the same file a moment ago: it changed, or an environment
        # variable is missing here.
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    logs.configure(config.logging, log_level if log_level_given else None)
    with_pid_in_logs()
    return config


def with_pid_in_logs() -> None:
    """Make every line of this process name its pid: several processes share one stderr."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, logs.JsonFormatter):
            handler.setFormatter(_JsonWithPid())
        elif formatter is None or type(formatter) is logging.Formatter:
            handler.setFormatter(logging.Formatter(PID_TEXT_FORMAT))


class _JsonWithPid(logs.JsonFormatter):
    """payhook's JSON lines with a `pid` key."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        # The line is one JSON object; adding a key before its closing brace keeps it one.
        return f'{line[:-1]}, "pid": {record.process}}}'
