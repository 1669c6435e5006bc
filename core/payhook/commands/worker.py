"""`payhook worker`: handler runs without serving HTTP, in one process or several."""

from __future__ import annotations

import sys

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    FiniteFloat,
    config_errors,
    config_option,
    discover_plugins,
    load,
)
from payhook.commands.log_level import apply_logging, log_level_given, log_level_option, start_logging

__all__ = ["worker"]


@click.command()
@config_option()
@log_level_option()
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
    from payhook.server.processes import WorkerOptions, run_worker, worker_in_processes
    from payhook.store.migrations import SchemaNotMigrated

    start_logging(log_level)
    config = load(config_path, require_secrets=True, plugins=discover_plugins())
    apply_logging(config, log_level)
    if processes > 1:
        options = WorkerOptions(log_level, log_level_given(), grace)
        worker_in_processes(config_path, config, options, processes)
    with config_errors():
        payhook = Payhook(config, migrate=config.database.is_sqlite, run_worker=True)
    try:
        run_worker(payhook, grace)
    except SchemaNotMigrated as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEM)
