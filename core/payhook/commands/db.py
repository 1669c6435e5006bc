"""`payhook db upgrade`: the core's and the installed plugins' migrations."""

from __future__ import annotations

import click

from payhook.commands.common import config_option, discover_plugins, load

__all__ = ["db"]


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@config_option()
def upgrade(config_path: str) -> None:
    """Check the configuration as `serve` does, then apply the core's and installed plugins'
    migrations, naming each revision in the order applied."""
    from payhook.store import migrations
    from payhook.store.engine import Store

    # The plugins a tenant names must be installed for their tables to be created: the same
    # check, and the same message, as `payhook serve`.
    config = load(config_path, plugins=discover_plugins())
    # No store timeout: a migration may rightly take longer than any ingest write.
    store = Store(config.database, timeout=None)
    try:
        applied = migrations.upgrade(store.engine)
    finally:
        store.dispose()
    for revision in applied:
        # A docstring's first paragraph may span lines: one revision, one line.
        click.echo(f"applied {revision.revision}: {' '.join(revision.doc.split())}")
    if not applied:
        click.echo("database is up to date; no migrations were needed")
