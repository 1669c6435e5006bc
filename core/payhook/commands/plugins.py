"""`payhook plugins list|new`: what is installed, what it handles and which tenants use it;
a new plugin package to start from."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    EXIT_USAGE,
    config_option,
    echo_json,
    json_option,
    load,
    quiet_discovery,
    table,
)
from payhook.config import Config
from payhook.plugins.host import ENTRY_POINT_GROUP, PluginHost
from payhook.plugins.scaffold import package_folder, render

__all__ = ["plugins"]


@dataclass(frozen=True)
class PluginRow:
    name: str
    version: str | None
    # installed; broken (its import failed); disabled (PAYHOOK_DISABLED_PLUGINS); or
    # missing (a tenant enables it, but it is not installed)
    status: str
    event_types: tuple[str, ...]
    tenants: tuple[str, ...]
    error: str | None = None

    @property
    def problem(self) -> bool:
        """A tenant needs it and it cannot run."""
        return bool(self.tenants) and self.status != "installed"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "event_types": list(self.event_types),
            "tenants": list(self.tenants),
            "error": self.error,
        }


def plugin_rows(host: PluginHost, config: Config | None) -> list[PluginRow]:
    versions = {
        entry.name: entry.dist.version if entry.dist is not None else None
        for entry in entry_points(group=ENTRY_POINT_GROUP)
    }
    enabled_by: dict[str, list[str]] = {}
    for tenant in config.tenants.values() if config else []:
        for name in tenant.plugins:
            enabled_by.setdefault(name, []).append(tenant.slug)
    names = sorted({*versions, *host.names, *enabled_by})
    rows = []
    for name in names:
        if name in host.names:
            status = "installed"
        elif name in host.load_errors:
            status = "broken"
        elif name in host.disabled:
            status = "disabled"
        else:
            status = "missing"
        handlers = host.handlers.get(name, [])
        rows.append(
            PluginRow(
                name=name,
                version=versions.get(name),
                status=status,
                event_types=tuple(sorted({handler.event_type for handler in handlers})),
                tenants=tuple(sorted(enabled_by.get(name, []))),
                error=host.load_errors.get(name),
            )
        )
    return rows


@click.group()
def plugins() -> None:
    """Plugins: the installed ones, or a new one to write."""


@plugins.command("list")
@config_option(
    required=False,
    help="The TOML configuration file (or $PAYHOOK_CONFIG), to show which tenants enable each plugin.",
)
@json_option
def list_plugins(config_path: str | None, as_json: bool) -> None:
    """List installed plugins: version, event types, and the tenants that enable each.

    Exits 1 when a tenant enables a plugin that is missing, broken or disabled.
    """
    config = load(config_path) if config_path else None
    with quiet_discovery():
        rows = plugin_rows(PluginHost(), config)
    if as_json:
        echo_json([row.as_json() for row in rows])
    elif not rows:
        click.echo("no plugins are installed", err=True)
    else:
        lines = []
        for row in rows:
            # One event type per line, whole: readers copy them into Stripe's endpoint form.
            first, *more = row.event_types or ("-",)
            tenants = ", ".join(row.tenants) or ("-" if config else "(no --config)")
            lines.append([row.name, row.version or "-", row.status, first, tenants])
            lines.extend(["", "", "", event_type, ""] for event_type in more)
        click.echo(table(["plugin", "version", "status", "event types", "tenants"], lines))
        for row in rows:
            if row.error:
                click.echo(f"{row.name}: {row.error}", err=True)
    if any(row.problem for row in rows):
        sys.exit(EXIT_PROBLEM)


@plugins.command()
@click.argument("name")
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder to create payhook-NAME in (default: the current one).",
)
@click.option(
    "--with-table",
    is_flag=True,
    help="Also generate a table (a SQLModel model) and its Alembic migration on the plugin's "
    "own branch, with tests that run on SQLite and PostgreSQL.",
)
def new(name: str, directory: Path | None, with_table: bool) -> None:
    """Create the package payhook-NAME: a handler, its settings, its entry point, and tests."""
    target = package_folder(name, directory)
    try:
        files = render(name, target, with_table=with_table)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        if target.exists():
            click.echo(
                f"--directory is the folder to create payhook-{name} in (here {target.parent}): "
                f"pass another one, or remove {target}",
                err=True,
            )
        sys.exit(EXIT_USAGE)
    for path in files:
        click.echo(f"created {path}")
    click.echo(f'\nnext: pip install -e "{target}[testing]" && pytest {target}')
