"""The database: one engine, short core transactions, and handlers' transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from .config import DatabaseConfig
from .sqlite import (
    LAZY_BEGIN,
    TRANSACTION_STATE,
    Checkpointer,
    WriteGate,
    make_sqlite_engine,
    prepare_write,
)

__all__ = ["HandlerTransaction", "Store", "StoreUnavailable"]

# Errors that mean "the database is not there right now", as opposed to a bug in a query.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


class StoreUnavailable(Exception):
    """The database could not be reached or did not answer in time.

    `reason` is a short, secret-free name of what went wrong (say, the driver's error
    type), fit for a health check's answer; the message has the details.
    """

    def __init__(self, message: str, *, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class Store:
    """One engine, and the two kinds of transaction the core opens on it."""

    def __init__(self, config: DatabaseConfig, *, min_pool_size: int = 0) -> None:
        self.config = config
        self.is_sqlite = config.is_sqlite
        # SQLite has one writer. Queueing this process's writers on a gate wakes them the
        # moment it is free; SQLite's own busy handler sleeps in growing steps instead.
        self.gate: WriteGate | None = WriteGate(config.busy_timeout_ms / 1000) if self.is_sqlite else None
        # Every concurrent handler run that uses its session holds a connection.
        self.engine = _make_engine(config, max(config.pool_size, min_pool_size), self.gate)
        # Handlers' sessions: on SQLite their transactions begin lazily (see sqlite.py).
        self.handler_engine = (
            self.engine.execution_options(**{LAZY_BEGIN: True}) if self.is_sqlite else self.engine
        )
        self._checkpointer: Checkpointer | None = None
        dbapi: Any = self.engine.dialect.dbapi
        # The core's hot statements run on the DBAPI cursor, so driver errors arrive raw.
        self._driver_errors: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        self._unavailable: tuple[type[Exception], ...] = (*UNAVAILABLE, *self._driver_errors)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A short write transaction, committed on exit (SQLite: holding the write lock)."""
        gate = self.gate
        try:
            if gate is not None:
                gate.acquire()
            try:
                with self.engine.begin() as conn:
                    try:
                        yield conn
                    except self._driver_errors as exc:
                        # Raw driver errors bypass SQLAlchemy: drop a dead connection from
                        # the pool ourselves.
                        if self.engine.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None):  # type: ignore[arg-type]
                            conn.invalidate(exc)
                        raise
            finally:
                if gate is not None:
                    gate.release()
        except self._unavailable as exc:
            raise StoreUnavailable(describe(exc), reason=error_type(exc)) from exc

    def handler_transaction(self) -> HandlerTransaction:
        return HandlerTransaction(self)

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database would take a write now.

        On SQLite that means getting the write lock (another process may hold it for long).
        """
        if self.is_sqlite:
            with self.transaction() as conn:
                conn.exec_driver_sql("SELECT 1")
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except self._unavailable as exc:
            raise StoreUnavailable(describe(exc), reason=error_type(exc)) from exc

    def start_maintenance(self) -> None:
        """Background upkeep while a receiver or worker runs: SQLite's WAL checkpoints."""
        if self.is_sqlite and self._checkpointer is None and self.engine.url.database:
            self._checkpointer = Checkpointer(self.engine.url.database)
            self._checkpointer.start()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()


class HandlerTransaction:
    """One handler run's transaction, opened only if the handler uses its session.

    On SQLite the write lock is taken at the first write and held until `commit` or
    `rollback`; a handler that never writes never takes it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: Session | None = None

    @property
    def used(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.store.handler_engine, expire_on_commit=False)
        return self._session

    def hold_write_lock(self) -> bool:
        """SQLite: if this transaction has begun, take the write lock now; True if held.

        While it is held nobody else can write, so nobody can take this run over either.
        """
        gate = self.store.gate
        if gate is None or self._session is None or not self._session.in_transaction():
            return False
        conn = self._session.connection()
        if conn.info.get(TRANSACTION_STATE) not in ("read", "write"):
            return False  # nothing read yet: a separate commit is harmless
        prepare_write(conn, gate, gate.patience)
        return True

    def cursor_for_write(self) -> Any:
        """The transaction's DBAPI cursor, ready to write (for the core's success mark)."""
        conn = self.session.connection()
        if self.store.gate is not None:
            prepare_write(conn, self.store.gate, self.store.gate.patience)
        return conn.connection.cursor()

    def commit(self) -> None:
        assert self._session is not None
        try:
            self._session.commit()
        finally:
            self._release()

    def rollback(self) -> None:
        if self._session is not None:
            try:
                self._session.rollback()
            finally:
                self._release()

    def close(self) -> None:
        if self._session is not None:
            try:
                self._session.close()
            finally:
                self._release()
                self._session = None

    def _release(self) -> None:
        if self.store.gate is not None:
            self.store.gate.release_if_held()


def error_type(exc: BaseException) -> str:
    """The driver's own error type behind a SQLAlchemy wrapper, e.g. `OperationalError`."""
    return type(getattr(exc, "orig", None) or exc).__name__


def describe(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0]
    return f"{error_type(exc)}: {first_line}"


def _make_engine(config: DatabaseConfig, pool_size: int, gate: WriteGate | None) -> Engine:
    if gate is not None:
        return make_sqlite_engine(config, pool_size, gate)
    return create_engine(
        config.url,
        pool_size=pool_size,
        # Bounded, so many processes on one server stay under its max_connections.
        max_overflow=2,
        pool_timeout=config.connect_timeout,
        connect_args={"connect_timeout": max(1, round(config.connect_timeout))},
    )
