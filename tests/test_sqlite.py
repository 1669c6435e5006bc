"""SQLite specifics: waiting for another process's write lock (bounded), and checkpoints off the hot path."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from payhook.config import DatabaseConfig
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.eventlog import EventLog
from payhook.store.migrations import upgrade
from payhook.store.runs import runs_of
from sqlalchemy import text

from .test_writer import delivery


def test_a_writer_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    store = Store(DatabaseConfig(url=f"sqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=5000))
    with store.transaction() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.2, other.execute, ["COMMIT"]).start()

    with store.transaction() as conn:  # waits for the other writer, then goes ahead
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with store.transaction() as conn:
        assert conn.execute(text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 2]
    other.close()
    store.dispose()


def test_a_lock_held_past_the_busy_timeout_is_an_outage(tmp_path: Path) -> None:
    store = Store(DatabaseConfig(url=f"sqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=100))
    store.ping()
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="locked"):
        store.ping()
    assert time.monotonic() - started < 5  # bounded by busy_timeout_ms, not stuck
    other.execute("ROLLBACK")
    store.ping()
    other.close()
    store.dispose()


def test_commits_leave_the_wal_to_the_checkpointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("payhook.store.sqlite.CHECKPOINT_INTERVAL", 0.05)
    path = tmp_path / "db.sqlite"
    store = Store(DatabaseConfig(url=f"sqlite:///{path}"))
    with store.transaction() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        conn.execute(text("CREATE TABLE t (x TEXT)"))
    for _ in range(50):  # 5 MB: past SQLite's default auto-checkpoint of 1000 pages
        with store.transaction() as conn:
            conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": "y" * 100_000})
    # No commit copied the WAL into the database file...
    assert path.stat().st_size < 1_000_000

    store.start_maintenance()  # ...the checkpointer does, beside the writers.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and path.stat().st_size < 5_000_000:
        time.sleep(0.05)
    store.dispose()
    assert path.stat().st_size >= 5_000_000


def test_a_lock_wait_ends_at_the_transactions_deadline(tmp_path: Path, stripe_event: Any) -> None:
    """The store timeout bounds the wait for another process's lock, whatever busy_timeout_ms says."""
    store = Store(
        DatabaseConfig(url=f"sqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=60_000), timeout=0.5
    )
    upgrade(store.engine, include_plugins=False)
    log = EventLog(store, runs_of(store))
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for wait in (
            lambda: log.append([delivery(stripe_event)], deadline=time.monotonic() + 0.2),
            lambda: log.append([delivery(stripe_event)]),  # the store's own timeout
            store.ping,
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="locked"):
                wait()
            assert time.monotonic() - started < 0.5 + 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert log.append([delivery(stripe_event)])[0].status == "ignored"
    store.dispose()
