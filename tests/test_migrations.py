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


@store_backends
def test_failures_recorded_under_old_type_names_group_with_new_ones(payhook_database_url: str) -> None:
    from payhook.store.models import Event, HandlerRun, RunFailure, utcnow
    from sqlalchemy import select

    events, runs, failures = (model.__table__ for model in (Event, HandlerRun, RunFailure))  # type: ignore[attr-defined]
    engine = create_engine(payhook_database_url)
    command.upgrade(alembic_config(engine), "0005_operator_sessions")
    old_names = {
        "payhook.sqlite.WriteConflict": "payhook.WriteConflict",
        "payhook.stripe_clients.NoStripeKey": "payhook.NoStripeKey",
        "LeaseExpired": "payhook.LeaseExpired",
        "WorkerStopped": "payhook.WorkerStopped",
        "payhook.GiveUp": "payhook.GiveUp",  # public names were stable already
        "RuntimeError": "RuntimeError",
        "payhook_registration.errors.Unpaid": "payhook_registration.errors.Unpaid",  # a plugin's
    }
    now = utcnow()
    with engine.begin() as conn:
        [event_id] = conn.execute(
            events.insert().returning(events.c.id),
            {"tenant": "t", "stripe_event_id": "evt_old", "type": "x", "payload": "{}", "received_at": now},
        ).scalars()
        for number, name in enumerate(old_names):
            [run_id] = conn.execute(
                runs.insert().returning(runs.c.id),
                {
                    "event_id": event_id,
                    "plugin": "p",
                    "handler": f"h{number}",
                    "status": "dead",
                    "last_error_type": name,
                    "created_at": now,
                },
            ).scalars()
            conn.execute(
                failures.insert(),
                {
                    "run_id": run_id,
                    "attempt": 1,
                    "error_type": name,
                    "message": "boom",
                    "traceback": "",
                    "failed_at": now,
                },
            )
    upgrade(engine, include_plugins=False)
    with engine.connect() as conn:
        recorded = conn.execute(select(failures.c.error_type).order_by(failures.c.id)).scalars().all()
        last = conn.execute(select(runs.c.last_error_type).order_by(runs.c.id)).scalars().all()
    assert recorded == last == list(old_names.values())
    engine.dispose()
