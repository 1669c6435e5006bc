"""SQLite, tuned for one busy writer: WAL, our own lock waits, checkpoints off the hot path."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from .config import DatabaseConfig

__all__ = ["Checkpointer", "make_sqlite_engine"]

log = logging.getLogger("payhook.sqlite")

# While another process holds the write lock we poll for it in short steps. SQLite's own busy
# handler sleeps 1, 2, 5, 10, 15, 20, 25 ms..., so a lock held for 3 ms could cost 8 ms.
FIRST_WAIT = 0.0002
LONGEST_WAIT = 0.002
CHECKPOINT_INTERVAL = 1.0


def make_sqlite_engine(config: DatabaseConfig, pool_size: int) -> Engine:
    engine = create_engine(
        config.url,
        connect_args={"check_same_thread": False, "timeout": config.busy_timeout_ms / 1000},
        pool_size=pool_size,
    )
    synchronous = config.sqlite_synchronous.upper()
    patience = config.busy_timeout_ms / 1000

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # SQLAlchemy's "begin" event issues BEGIN itself (see below), not the driver.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # A commit that crosses the auto-checkpoint threshold copies the WAL into the
        # database before it returns: the slowest requests were those. The Checkpointer
        # thread does that work instead.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Lock waits are ours (begin_immediate); statements inside a transaction that holds
        # the write lock do not wait in WAL mode.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        driver_connection: Any = conn.connection.driver_connection
        begin_immediate(driver_connection, patience)

    return engine


def begin_immediate(dbapi_conn: sqlite3.Connection, patience: float) -> None:
    """BEGIN IMMEDIATE, waiting up to `patience` seconds for another writer to finish.

    The write lock is taken up front: a deferred transaction that reads and then writes
    fails at once in WAL mode when another writer got in between.
    """
    deadline = time.monotonic() + patience
    wait = FIRST_WAIT
    while True:
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(min(wait, remaining))
            wait = min(wait * 2, LONGEST_WAIT)


class Checkpointer:
    """Copies the WAL back into the database every second, beside the writers.

    PASSIVE checkpoints never wait for and never block readers or writers.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payhook-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()
