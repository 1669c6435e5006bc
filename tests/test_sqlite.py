"""SQLite specifics: waiting for another process's write lock, and checkpoints off the hot path."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from payhook.config import DatabaseConfig
from payhook.store import Store, StoreUnavailable
from sqlalchemy import text


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
    monkeypatch.setattr("payhook.sqlite.CHECKPOINT_INTERVAL", 0.05)
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
