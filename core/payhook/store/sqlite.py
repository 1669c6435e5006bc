"""SQLite, tuned for one busy writer: WAL, a write gate, checkpoints off the hot path.

SQLite lets one transaction write at a time. Two rules keep that from stalling payhook:

* A short core transaction (ingest, claim, a run transition) takes the process's write gate
  and then `BEGIN IMMEDIATE`, so it never fails half way for want of the lock. Each wait
  lasts at most `busy_timeout_ms`, and never past the transaction's deadline (the store
  timeout: a delivery is answered 503 by then anyway).
* A handler's transaction begins only when the handler first touches the database, and
  takes the gate only at its first write. A handler waiting on the network before it writes
  holds nothing; one that writes and then waits holds the lock until it commits.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from payhook.config import DatabaseConfig
from payhook.store.sqlite_files import FileGuard, StoreFileProblem

__all__ = [
    "LOCK_DEADLINE",
    "Checkpointer",
    "WriteConflict",
    "WriteGate",
    "begin_lazily",
    "is_lock_error",
    "is_read_only",
    "make_sqlite_engine",
    "patience_until",
]

log = logging.getLogger("payhook.sqlite")

# While another process holds the write lock we poll for it in short steps. SQLite's own busy
# handler sleeps 1, 2, 5, 10, 15, 20, 25 ms..., so a lock held for 3 ms could cost 8 ms.
FIRST_WAIT = 0.0002
LONGEST_WAIT = 0.002
CHECKPOINT_INTERVAL = 1.0
# The option that marks a handler's connection: its transaction begins lazily.
LAZY_BEGIN = "payhook_lazy_begin"
# The option that marks a core transaction whose commit need not survive a power loss.
DURABLE = "payhook_durable"
SYNCHRONOUS = "payhook_synchronous"  # in conn.info: the connection's current level
TRANSACTION_STATE = "payhook_txn"  # in conn.info: None, "pending", "read" or "write"
# The execution option that bounds a transaction's wait for the lock (time.monotonic()).
LOCK_DEADLINE = "payhook_lock_deadline"
_READ_ONLY = ("SELECT", "PRAGMA", "EXPLAIN")
SQLITE_BUSY = 5


class WriteConflict(Exception):
    """A handler's transaction read, then could not write: another writer got in between.

    Its reads may be stale, so the work is rolled back and the handler runs again.
    """


def is_lock_error(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) is SQLite's "database is locked/busy"."""
    seen: BaseException | None = exc
    while seen is not None:
        orig = getattr(seen, "orig", None)
        if isinstance(orig, sqlite3.OperationalError):
            seen = orig
        if isinstance(seen, sqlite3.OperationalError):
            code = getattr(seen, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == SQLITE_BUSY) or "locked" in str(seen):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


class WriteGate:
    """This process's writers in one queue: a lock that knows its holder, with bounded waits."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._lock = threading.Lock()
        self._holder: int | None = None

    def acquire(self, patience: float | None = None) -> None:
        """Wait up to `patience` seconds (default: the gate's own) for the other writers."""
        wait = self.patience if patience is None else max(0.0, patience)
        if not self._lock.acquire(timeout=wait):
            raise OperationalError(
                "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked (write gate)")
            )
        self._holder = threading.get_ident()

    def release(self) -> None:
        self._holder = None
        self._lock.release()

    def held_here(self) -> bool:
        return self._holder == threading.get_ident()

    def release_if_held(self) -> None:
        if self.held_here():
            self.release()


def make_sqlite_engine(
    config: DatabaseConfig, pool_size: int, gate: WriteGate, guard: FileGuard | None = None
) -> Engine:
    """The engine; with `guard`, no connection opens and no transaction begins on a database
    file that was replaced under the process or whose `-shm` file cannot be written."""
    engine = create_engine(
        config.url,
        connect_args={"check_same_thread": False, "timeout": config.busy_timeout_ms / 1000},
        pool_size=pool_size,
    )
    synchronous = config.sqlite_synchronous.upper()
    patience = gate.patience

    if guard is not None:

        @event.listens_for(engine, "do_connect")
        def _before_connecting(*_args: Any) -> None:
            # A new connection after the file was deleted would create an empty database.
            guard.check()

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # SQLAlchemy's "begin" event issues BEGIN itself (see below), not the driver.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        _record.info[SYNCHRONOUS] = synchronous
        cursor.execute("PRAGMA foreign_keys=ON")
        # A commit that crosses the auto-checkpoint threshold copies the WAL into the
        # database before it returns: the slowest requests were those. The Checkpointer
        # thread does that work instead.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Lock waits are ours (begin_immediate); statements inside a transaction that holds
        # the write lock do not wait in WAL mode.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()
        if guard is not None:
            guard.opened()

    def _durability(conn: Connection, durable: bool) -> None:
        # synchronous is per connection and per commit in WAL mode: only the commits that
        # acknowledge deliveries pay the configured fsync. The worker's commits (claims,
        # handler work with its success mark) need not: if power fails before the next
        # durable commit or checkpoint, such a commit is lost whole, the run is claimed
        # again after its lease and re-run from its durable event, applied once.
        level = synchronous if durable else "NORMAL"
        if conn.info.get(SYNCHRONOUS) != level:
            conn.connection.driver_connection.execute(f"PRAGMA synchronous={level}")  # type: ignore[union-attr]
            conn.info[SYNCHRONOUS] = level

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if guard is not None:
            guard.check()
        options = conn.get_execution_options()
        if options.get(LAZY_BEGIN):
            _durability(conn, durable=False)
            conn.info[TRANSACTION_STATE] = "pending"
            return
        _durability(conn, durable=options.get(DURABLE, True))
        conn.info.pop(TRANSACTION_STATE, None)
        deadline = conn.get_execution_options().get(LOCK_DEADLINE)
        begin_immediate(conn.connection.driver_connection, patience_until(deadline, patience))  # type: ignore[arg-type]

    @event.listens_for(engine, "before_cursor_execute")
    def _before_statement(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        state = conn.info.get(TRANSACTION_STATE)
        if state is None or state == "write":
            return
        begin_lazily(conn, gate, writes=not is_read_only(statement))

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _ended(conn: Connection) -> None:
        conn.info.pop(TRANSACTION_STATE, None)

    return engine


def patience_until(deadline: float | None, patience: float) -> float:
    """Seconds a lock wait may last: `patience`, cut short by `deadline` (time.monotonic())."""
    if deadline is None:
        return patience
    return min(patience, deadline - time.monotonic())


def is_read_only(statement: str) -> bool:
    """True when `statement` (SQL text) only reads: a handler's transaction needs no lock for it."""
    return statement.lstrip()[:7].upper().startswith(_READ_ONLY)


def begin_lazily(conn: Connection, gate: WriteGate, *, writes: bool) -> None:
    """Before a statement of a handler's transaction (see `LAZY_BEGIN`): a plain BEGIN for
    its first read, the write lock for its first write (or for its first statement at all,
    once a run lost the race to write). SQLAlchemy's statements come here through an event;
    payhook.sql's, which run on the driver's connection, call it themselves."""
    state = conn.info.get(TRANSACTION_STATE)
    if state is None or state == "write":
        return
    if writes or conn.get_execution_options()[LAZY_BEGIN] == "at_first_statement":
        prepare_write(conn, gate, gate.patience)
    elif state == "pending":
        conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]
        conn.info[TRANSACTION_STATE] = "read"


def prepare_write(conn: Connection, gate: WriteGate, patience: float) -> None:
    """Before a handler transaction's first write: take the gate, then SQLite's lock.

    A transaction that has only read so far is upgraded in place; if another writer
    committed since its reads, SQLite refuses, and that is a WriteConflict.
    """
    state = conn.info.get(TRANSACTION_STATE)
    if state is None or state == "write":
        return
    if not gate.held_here():
        gate.acquire()
    driver: Any = conn.connection.driver_connection
    if state == "pending":
        begin_immediate(driver, patience)
    else:
        try:
            # A write that takes the lock and changes nothing: the upgrade, made visible.
            driver.execute("DELETE FROM payhook_event WHERE 0")
        except sqlite3.OperationalError as exc:
            if is_lock_error(exc):
                raise WriteConflict("another writer committed after this transaction's reads") from exc
            raise
    conn.info[TRANSACTION_STATE] = "write"


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

    def __init__(self, path: str, guard: FileGuard | None = None) -> None:
        self.path = path
        self.guard = guard
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
                    if self.guard is not None:
                        # A checkpoint writes -shm and the database: only when both can be.
                        self.guard.check_writable()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except StoreFileProblem:
                    continue  # the guard logged it
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()
