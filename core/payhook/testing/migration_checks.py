"""`assert_migrations_match`: a plugin's Alembic branch creates exactly its models' tables."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from payhook.plugins.host import ENTRY_POINT_GROUP
from payhook.store import migrations
from payhook.testing.failing import fail

__all__ = ["assert_migrations_match"]

_VERSION_OPTS = {"version_table": migrations.VERSION_TABLE}


def assert_migrations_match(plugin: str, database_url: str | None = None) -> None:
    """Fail unless the plugin's Alembic branch creates exactly the tables of its models.

    Migrates an empty database (`database_url`, or a throwaway SQLite file) with the core's
    branch and every installed plugin's, as `payhook db upgrade` does, then compares the
    tables named ``<plugin>_...`` with the SQLModel tables of those names, using alembic's
    `compare_metadata`: tables, columns, types, nullability, indexes, unique constraints.
    The plugin must be installed (its `payhook` and `payhook.migrations` entry points), its
    branch labelled with its name, and its models imported by its package.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlmodel import SQLModel

    prefix = plugin.replace("-", "_") + "_"
    _load_entry_point(ENTRY_POINT_GROUP, plugin)  # imports the package, and with it its models
    _load_entry_point(migrations.MIGRATIONS_ENTRY_POINTS, plugin)
    if not any(name.startswith(prefix) for name in SQLModel.metadata.tables):
        fail(
            f"no SQLModel table is named {prefix}...: name plugin {plugin!r}'s tables so, and "
            "import its models from its package",
            pytrace=False,
        )

    def is_the_plugins(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return bool(table and table != migrations.VERSION_TABLE and table.startswith(prefix))

    with _empty_database(database_url) as url:
        engine = create_engine(url)
        try:
            migrations.upgrade(engine)
            locations = migrations.plugin_version_locations()
            script = ScriptDirectory.from_config(migrations.alembic_config(engine, locations))
            try:
                branch_heads = {revision.revision for revision in script.get_revisions(f"{plugin}@head")}
            except Exception as exc:  # alembic raises several kinds for an unknown label
                fail(
                    f"no Alembic branch labelled {plugin!r} ({exc}); give the first revision "
                    f"branch_labels = ({plugin!r},)",
                    pytrace=False,
                )
            with engine.connect() as conn:
                applied = set(MigrationContext.configure(conn, opts=_VERSION_OPTS).get_current_heads())
                context = MigrationContext.configure(
                    conn, opts={"compare_type": True, "include_object": is_the_plugins}
                )
                drift = compare_metadata(context, SQLModel.metadata)
        finally:
            engine.dispose()
    assert branch_heads <= applied, (
        f"{plugin}'s head {sorted(branch_heads)} was not applied: {sorted(applied)}"
    )
    # alembic names each difference as the change the database would need: add_* is in the
    # models only, remove_* in the migrations only, modify_* differs between the two.
    assert drift == [], f"plugin {plugin!r}: its migrations and its models differ: {drift}"


def _load_entry_point(group: str, name: str) -> Any:
    found = entry_points(group=group, name=name)
    if not found:
        fail(
            f"no {group!r} entry point named {name!r}: is the plugin installed "
            "(pip install -e .) and does its pyproject.toml declare it?",
            pytrace=False,
        )
    return next(iter(found)).load()


@contextmanager
def _empty_database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="payhook-migrations-") as folder:
        yield f"sqlite:///{Path(folder) / 'payhook.db'}"
