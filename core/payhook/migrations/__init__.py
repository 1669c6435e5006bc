"""Alembic migrations for the core tables, and the `upgrade` entry point."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine

from ..plugins import disabled_from_env

__all__ = ["VERSION_TABLE", "alembic_config", "upgrade"]

VERSION_TABLE = "payhook_alembic_version"
MIGRATIONS_ENTRY_POINTS = "payhook.migrations"


def plugin_version_locations() -> list[str]:
    """Folders of plugin migration branches, from the `payhook.migrations` entry points.

    Plugins blocked by PAYHOOK_DISABLED_PLUGINS are left out, like everything else of theirs.
    """
    disabled = disabled_from_env()
    locations = []
    for entry_point in entry_points(group=MIGRATIONS_ENTRY_POINTS):
        if entry_point.name in disabled:
            continue
        module = entry_point.load()
        locations.append(str(Path(module.__file__).parent))
    return locations


def alembic_config(engine: Engine, extra_locations: Iterable[str] = ()) -> AlembicConfig:
    here = Path(__file__).parent
    config = AlembicConfig()
    config.set_main_option("script_location", str(here))
    locations = [str(here / "versions"), *extra_locations]
    # Alembic splits this option on the separator it is told about; spaces break on odd paths.
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", ":".join(locations))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, *, include_plugins: bool = True) -> None:
    """Bring the core branch (and every installed plugin's branch) to its head."""
    extra = plugin_version_locations() if include_plugins else []
    command.upgrade(alembic_config(engine, extra), "heads")
