"""`payhook plugins list`: what is installed, what it handles, and which tenants use it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import click

from payhook.commands.common import (
    EXIT_PROBLEM,
    echo_json,
    json_option,
    load,
    quiet_discovery,
    shorten,
    table,
)
from payhook.config import Config
from payhook.plugins.host import ENTRY_POINT_GROUP, PluginHost

__all__ = ["plugins_group"]


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


@click.group("plugins")
def plugins_group() -> None:
    """Installed plugins."""


@plugins_group.command("list")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="PAYHOOK_CONFIG",
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
        lines = [
            [
                row.name,
                row.version or "-",
                row.status,
                shorten(", ".join(row.event_types), 60) or "-",
                ", ".join(row.tenants) or ("-" if config else "(no --config)"),
            ]
            for row in rows
        ]
        click.echo(table(["plugin", "version", "status", "event types", "tenants"], lines))
        for row in rows:
            if row.error:
                click.echo(f"{row.name}: {row.error}", err=True)
    if any(row.problem for row in rows):
        sys.exit(EXIT_PROBLEM)
