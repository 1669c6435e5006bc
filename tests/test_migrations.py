"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from payhook.store import models
from payhook.store.migrations import VERSION_TABLE, alembic_config, upgrade
from payhook.testing import store_backends
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

CORE_TABLES = {"payhook_event", "payhook_handler_run", "payhook_run_failure"}


@store_backends
def test_upgrade_matches_the_models_and_downgrades(payhook_database_url: str) -> None:
    engine = create_engine(payhook_database_url)
    upgrade(engine, include_plugins=False)
    upgrade(engine, include_plugins=False)  # idempotent
    assert CORE_TABLES | {VERSION_TABLE} <= set(inspect(engine).get_table_names())
    core_only = SQLModel.metadata.__class__()
    for table in (models.Event, models.HandlerRun, models.RunFailure):
        table.__table__.to_metadata(core_only)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        diffs: list[Any] = compare_metadata(MigrationContext.configure(conn), core_only)
    assert [d for d in diffs if not (d[0] == "remove_table" and d[1].name not in CORE_TABLES)] == []
    command.downgrade(alembic_config(engine), "payhook@base")
    assert not CORE_TABLES & set(inspect(engine).get_table_names())
    engine.dispose()


def test_disabled_plugins_migrations_are_left_out(monkeypatch: Any) -> None:
    from payhook.store.migrations import plugin_version_locations

    everything = plugin_version_locations()
    monkeypatch.setenv("PAYHOOK_DISABLED_PLUGINS", "testplugin")
    assert [loc for loc in everything if "payhook_testplugin" not in loc] == plugin_version_locations()


def test_processes_starting_together_on_a_new_sqlite_file_take_turns(tmp_path: Any) -> None:
    import fcntl
    import subprocess
    import sys
    import threading

    path = tmp_path / "payhook.db"
    engine = create_engine(f"sqlite:///{path}")
    done = threading.Event()

    def migrate() -> None:
        upgrade(engine, include_plugins=False)
        done.set()

    # Another process is migrating: it holds the lock, and this one must wait for it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX);"
            " print('held', flush=True); sys.stdin.read()",
            f"{path}.migrate-lock",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waiting = threading.Thread(target=migrate, daemon=True)
        waiting.start()
        assert not done.wait(1.0), "upgrade() did not wait for the process holding the lock"
        assert not inspect(engine).get_table_names()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits, and its lock goes with it
        holder.wait(10)
    assert done.wait(30)
    assert set(inspect(engine).get_table_names()) >= CORE_TABLES
    with open(f"{path}.migrate-lock", "a") as lock:  # free again
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    engine.dispose()
