"""Alembic migrations for the core tables, and the `upgrade` entry point."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError
from sqlalchemy import Engine

from payhook.config import disabled_from_env

__all__ = [
    "NOT_MIGRATED",
    "VERSION_TABLE",
    "SchemaNotMigrated",
    "alembic_config",
    "is_at_head",
    "missing_heads",
    "one_migrator_at_a_time",
    "upgrade",
]

VERSION_TABLE = "payhook_alembic_version"
MIGRATIONS_ENTRY_POINTS = "payhook.migrations"
# What to do about a schema behind the code, said the same way wherever it is found.
NOT_MIGRATED = "run `payhook db upgrade` or pass `migrate=True`"


class SchemaNotMigrated(Exception):
    """The database lacks migrations the code needs; the message says what to run."""


def plugin_version_locations(only: Collection[str] | None = None) -> list[str]:
    """Folders of plugin migration branches, from the `payhook.migrations` entry points
    (of the plugins named in `only`, when given).

    Plugins blocked by PAYHOOK_DISABLED_PLUGINS are left out, like everything else of theirs.
    """
    disabled = disabled_from_env()
    locations = []
    for entry_point in entry_points(group=MIGRATIONS_ENTRY_POINTS):
        if entry_point.name in disabled or (only is not None and entry_point.name not in only):
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


def upgrade(engine: Engine, *, include_plugins: bool = True) -> list[Script]:
    """Bring the core branch (and every installed plugin's branch) to its head.

    Returns the revisions applied, in the order they were applied: branches that do not
    depend on each other (a plugin's and the core's) come in alembic's order.
    """
    extra = plugin_version_locations() if include_plugins else []
    config = alembic_config(engine, extra)
    applied: list[Script] = []

    def record(*, step: MigrationInfo, **_: object) -> None:
        revision = step.up_revision
        if step.is_upgrade and isinstance(revision, Script):
            applied.append(revision)

    config.attributes["on_version_apply"] = record  # env.py passes it to alembic
    with one_migrator_at_a_time(engine):
        command.upgrade(config, "heads")
    return applied


def missing_heads(engine: Engine, plugins: Collection[str] | None = None) -> list[str]:
    """The heads of the migration scripts the database has not reached: [] when it is current.

    The core's branch and the branches of the installed `plugins` (every installed plugin's
    when None). A database that holds revisions these scripts do not know (newer code
    upgraded it) counts as reached on those branches: it is ahead, not behind.
    """
    script = ScriptDirectory.from_config(alembic_config(engine, plugin_version_locations(plugins)))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        current = context.get_current_heads()
    reached: set[str] = set()
    for head in current:
        try:
            reached.update(rev.revision for rev in script.iterate_revisions(head, "base") if rev)
        except ResolutionError:
            return []  # a revision from newer code: the database is ahead of this one
    return sorted(head for head in script.get_heads() if head not in reached)


def is_at_head(engine: Engine, plugins: Collection[str] | None = None) -> bool:
    """Whether the database has every migration of the core and of `plugins` (see missing_heads)."""
    return not missing_heads(engine, plugins)


@contextmanager
def one_migrator_at_a_time(engine: Engine) -> Iterator[None]:
    """On an SQLite file, hold `<file>.migrate-lock` while the block runs.

    Processes started together on a new file (`serve` and `payhook worker` under systemd,
    say) would otherwise both create its tables, and the second would fail half way ("table
    ... already exists"); with the lock it finds them made. PostgreSQL needs none: alembic's
    DDL runs in a transaction there.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, start processes one at a time
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
