"""The database: one engine, short core transactions, and handlers' transactions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib.metadata import entry_points
from typing import Any

from sqlalchemy import Connection, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from payhook.config import STORE_BACKENDS, DatabaseConfig, IngestConfig
from payhook.store.compiled import Executor, drop_if_broken
from payhook.store.health import WriteHealth, lasting_cause, named_reason
from payhook.store.postgres import (
    Pipelined,
    Pooling,
    Statements,
    Watch,
    Watchdog,
    limits_statement,
    make_postgres_engine,
)
from payhook.store.sqlite import (
    DURABLE,
    LAZY_BEGIN,
    LOCK_DEADLINE,
    TRANSACTION_STATE,
    Checkpointer,
    WriteGate,
    make_sqlite_engine,
    patience_until,
    prepare_write,
)
from payhook.store.sqlite_files import FileGuard, StoreFileProblem

__all__ = ["DEFAULT_STORE_TIMEOUT", "HandlerTransaction", "Store", "StoreUnavailable"]

# `[ingest] store_timeout`'s default: how long anything may wait on the database.
DEFAULT_STORE_TIMEOUT = IngestConfig().store_timeout

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
    """One engine, and the two kinds of transaction the core opens on it.

    `timeout` (`[ingest] store_timeout`) bounds the waits: a core transaction that is not
    over within it fails with StoreUnavailable, whatever it waits on (SQLite: the write
    lock; PostgreSQL: a lock, a statement, or a server that stopped answering); on
    PostgreSQL every connection, handlers' included, also gets the server-side limits of
    postgres.py. None leaves PostgreSQL unbounded (say, for a migration that runs long).
    """

    def __new__(cls, config: DatabaseConfig, **options: Any) -> Store:
        """`Store(config)` for a host's database (`url = "django"`) is the host's Store
        subclass, named by the entry point of that name in the `payhook.stores` group."""
        scheme = config.url.split(":", 1)[0]
        if cls is Store and scheme == "django":
            [backend] = entry_points(group=STORE_BACKENDS, name=scheme)
            subclass: type[Store] = backend.load()
            return super().__new__(subclass)
        return super().__new__(cls)

    def __init__(
        self,
        config: DatabaseConfig,
        *,
        min_pool_size: int = 0,
        timeout: float | None = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self.config = config
        self.is_sqlite = config.is_sqlite
        self.timeout = timeout
        # SQLite has one writer. Queueing this process's writers on a gate wakes them the
        # moment it is free; SQLite's own busy handler sleeps in growing steps instead.
        self.gate: WriteGate | None = WriteGate(config.busy_timeout_ms / 1000) if self.is_sqlite else None
        # SQLite: the database file must stay the one opened, and writable (sqlite_files.py).
        path = make_url(config.url).database if self.is_sqlite else None
        self.file_guard = FileGuard(path) if path and path != ":memory:" else None
        # The last write that failed for a cause no retry cures, for /healthz.
        self.write_health = WriteHealth()
        # Every concurrent handler run that uses its session holds a connection.
        pool_size = max(config.pool_size, min_pool_size)
        self._watchdog: Watchdog | None = Watchdog() if not self.is_sqlite and timeout is not None else None
        # PostgreSQL behind a pooler: the server-side limits each transaction sets
        # (postgres.py); SQLAlchemy's transactions get them from the engine, the pipelined
        # ones here.
        self.pooling = Pooling()
        self._bounds = limits_statement(timeout) if not self.is_sqlite and timeout is not None else None
        if self.gate is not None:
            self.engine = make_sqlite_engine(config, pool_size, self.gate, self.file_guard)
        else:
            self.engine = make_postgres_engine(config, pool_size, timeout, self._watchdog, self.pooling)
        # Handlers' sessions: on SQLite their transactions begin lazily (see sqlite.py), and
        # take the write lock at their first write, or at their first statement when a run
        # lost that race once already.
        self.handler_engine = (
            self.engine.execution_options(**{LAZY_BEGIN: "at_first_write"}) if self.is_sqlite else self.engine
        )
        self.handler_engine_locked = (
            self.engine.execution_options(**{LAZY_BEGIN: "at_first_statement"})
            if self.is_sqlite
            else self.engine
        )
        self._checkpointer: Checkpointer | None = None
        dbapi: Any = self.engine.dialect.dbapi
        # The core's hot statements run on the DBAPI cursor, so driver errors arrive raw.
        self.driver_errors: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        # A read-only PostgreSQL (a standby after a failover) is not a bug in a query either.
        read_only = () if self.is_sqlite else (dbapi.errors.ReadOnlySqlTransaction,)
        self._unavailable: tuple[type[Exception], ...] = (*UNAVAILABLE, *self.driver_errors, *read_only)

    @property
    def _limits(self) -> str | None:
        """The statement that sets the server-side limits in a transaction, if it must."""
        return self._bounds if self.pooling.pooled else None

    def deadline(self) -> float | None:
        """When a core transaction starting now must be over (time.monotonic()), if ever."""
        return None if self.timeout is None else time.monotonic() + self.timeout

    @contextmanager
    def transaction(self, deadline: float | None = None, *, durable: bool = True) -> Iterator[Connection]:
        """A short write transaction, committed on exit (SQLite: holding the write lock).

        `durable=False`: on SQLite the commit may skip the fsync of `sqlite_synchronous =
        "full"` (see sqlite.py); for the worker's own bookkeeping, never for ingest.

        It must be over by `deadline` (time.monotonic(); default: `timeout` from now), or
        it fails with StoreUnavailable: on SQLite the wait for the write lock is cut
        short, on PostgreSQL the watchdog ends the connection.
        """
        if deadline is None:
            deadline = self.deadline()
        gate = self.gate
        watch: Watch | None = None
        try:
            if gate is not None:
                gate.acquire(patience_until(deadline, gate.patience))
            try:
                with self._connect(deadline) as conn:
                    if gate is not None and deadline is not None:
                        conn.execution_options(**{LOCK_DEADLINE: deadline})
                    if gate is not None and not durable:
                        conn.execution_options(**{DURABLE: False})
                    changes = self._changes(conn)
                    with self._watched(conn, deadline) as watch, conn.begin():
                        try:
                            yield conn
                        except self.driver_errors as exc:
                            # Raw driver errors bypass SQLAlchemy: drop a dead connection
                            # from the pool ourselves.
                            drop_if_broken(conn, exc)
                            raise
                    if changes is not None and self._changes(conn) != changes:
                        self.write_health.succeeded()  # committed a change
            finally:
                if gate is not None:
                    gate.release()
        except self._unavailable as exc:
            raise self._unavailable_error(exc, watch) from exc

    @contextmanager
    def pipelined_transaction(self, deadline: float | None = None) -> Iterator[Pipelined]:
        """PostgreSQL: a short write transaction in psycopg's pipeline mode, committed on exit.

        Statements go out without waiting for one another; a fetch waits for what was sent
        before it. BEGIN leaves with the first statement and COMMIT with the last, so a
        transaction that reads one result in the middle costs two round trips. Deadline
        and errors as in `transaction`.
        """
        with self._pipelined(deadline) as txn:
            yield txn
        self.write_health.succeeded()  # only ingest writes this way

    @contextmanager
    def _pipelined(self, deadline: float | None) -> Iterator[Pipelined]:
        with self._autocommit(deadline) as (conn, dbapi):
            cursor = dbapi.cursor()
            try:
                with dbapi.pipeline() as pipeline:
                    cursor.execute("BEGIN", prepare=False)
                    if self._limits is not None:
                        cursor.execute(self._limits, prepare=False)
                    yield Pipelined(cursor, pipeline)
                    cursor.execute("COMMIT", prepare=False)
            except BaseException as exc:
                self._roll_back(conn, dbapi, exc)
                raise
            finally:
                cursor.close()

    @contextmanager
    def statements(self, deadline: float | None = None) -> Iterator[Statements]:
        """PostgreSQL: a cursor whose every statement commits on its own, in one round trip.

        For work that one statement does atomically: no BEGIN or COMMIT to wait for.
        Deadline and errors as in `transaction`. Behind a pooler, with server-side limits
        (a `timeout`), the block is one pipelined transaction that carries them instead: a
        statement alone in autocommit mode has no transaction to set them in, and there is
        no session to hold them. That costs a second round trip, for the COMMIT.
        """
        if self._bounds is not None and self.pooling.pooled is None:
            self._find_pooler(deadline)
        if self._limits is not None:
            with self._pipelined(deadline) as txn:
                yield Statements.bounded(txn)
            self.write_health.succeeded()
            return
        with self._autocommit(deadline) as (conn, dbapi):
            cursor = dbapi.cursor()
            try:
                yield Statements(cursor)
            except self.driver_errors as exc:
                drop_if_broken(conn, exc, dbapi)
                raise
            finally:
                cursor.close()
        self.write_health.succeeded()  # only ingest writes this way

    @contextmanager
    def _autocommit(self, deadline: float | None) -> Iterator[tuple[Connection, Any]]:
        """A pooled PostgreSQL connection and its driver connection in autocommit mode,
        watched until `deadline`; the store's errors become StoreUnavailable."""
        if deadline is None:
            deadline = self.deadline()
        watch: Watch | None = None
        try:
            with self._connect(deadline) as conn:
                dbapi: Any = conn.connection.dbapi_connection
                with self._watched(conn, deadline) as watch:
                    # Left to itself, psycopg sends BEGIN alone and waits for it: in
                    # autocommit mode transactions are ours to open and close. (Set on the
                    # driver directly: SQLAlchemy's isolation-level round costs more than
                    # the INSERT.)
                    dbapi.autocommit = True
                    try:
                        yield conn, dbapi
                    finally:
                        self._restore_transactions(conn, dbapi)
        except self._unavailable as exc:
            raise self._unavailable_error(exc, watch) from exc

    def _find_pooler(self, deadline: float | None) -> None:
        """Open the first connection, which finds whether a pooler is in between."""
        try:
            with self._connect(deadline):
                pass
        except self._unavailable as exc:
            raise self._unavailable_error(exc, None) from exc

    def _roll_back(self, conn: Connection, dbapi: Any, exc: BaseException) -> None:
        """End what a failed pipelined transaction began; drop its connection if it broke."""
        if isinstance(exc, self.driver_errors) and drop_if_broken(conn, exc, dbapi):
            return
        try:
            dbapi.rollback()  # sends ROLLBACK unless the transaction is over already
        except self.driver_errors as error:
            conn.invalidate(error)

    def _restore_transactions(self, conn: Connection, dbapi: Any) -> None:
        """Back to transactions before the pool lends the connection to anyone else."""
        if conn.invalidated:
            return
        driver: Any = self.engine.dialect.dbapi
        try:
            dbapi.autocommit = False
        except (*self.driver_errors, driver.ProgrammingError) as error:
            conn.invalidate(error)  # broken, or still in a transaction: never lend it again

    def _unavailable_error(self, exc: BaseException, watch: Watch | None) -> StoreUnavailable:
        if watch is not None and watch.cut:
            message = f"no answer from the database within {self.timeout:g} s"
            return StoreUnavailable(message, reason="timeout")
        # A file problem is checked afresh at each /healthz: only the others are remembered.
        named = named_reason(exc)
        cause = lasting_cause(exc)
        if cause is not None and named is None:
            self.write_health.failed(cause)
        return StoreUnavailable(self._secret_free(describe(exc)), reason=named or cause or error_type(exc))

    def _secret_free(self, message: str) -> str:
        """`message` without the URL's password, should the driver have quoted it."""
        password = make_url(self.config.url).password if not self.is_sqlite else None
        return message.replace(str(password), "***") if password else message

    def _changes(self, conn: Connection) -> int | None:
        """SQLite: the rows this connection has changed so far; a commit that changed some
        proves the store takes writes (a ping's or a claim's that changed none does not)."""
        if self.gate is None:
            return None
        changes: int = conn.connection.driver_connection.total_changes  # type: ignore[union-attr]
        return changes

    @contextmanager
    def _connect(self, deadline: float | None) -> Iterator[Connection]:
        """A pooled connection; a new one may take no longer than `deadline` to open."""
        if self._watchdog is None:
            with self.engine.connect() as conn:
                yield conn
            return
        with self._watchdog.connecting(deadline), self.engine.connect() as conn:
            yield conn

    def _watched(self, conn: Connection, deadline: float | None) -> Any:
        """PostgreSQL: the watchdog's watch over `conn` until `deadline`; else nothing."""
        if self._watchdog is None or deadline is None:
            return nullcontext(None)
        return self._watchdog.watch(conn.connection.dbapi_connection, deadline)

    def handler_transaction(self, *, lock_early: bool = False) -> HandlerTransaction:
        """The transaction of one handler run. A Store subclass may return its own subclass
        of HandlerTransaction (say, on a host framework's connection): the processor calls
        the handler, then, when `used` is true, writes the success mark through
        `cursor_for_write()` and calls `commit`; on an exception `rollback`; `close` last,
        all in one thread. When `used` is false it marks success apart (perhaps batched),
        so a transaction that holds the handler's work from its start says `used` at once."""
        return HandlerTransaction(self, lock_early=lock_early)

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database would take a write now.

        Cheap enough for a load balancer's every poll. On SQLite: the file checks of
        sqlite_files.py, then the write lock (another process may hold it for long); on
        PostgreSQL one round trip, which also asks whether the server is read-only (a
        standby). On both, a write that failed lately for a cause no retry cures.
        """
        if self.file_guard is not None:
            try:
                self.file_guard.check_writable()
            except StoreFileProblem as exc:
                raise StoreUnavailable(str(exc), reason=exc.reason) from exc
        failure = self.write_health.failure()
        if failure is not None:
            raise StoreUnavailable(f"the last write failed: {failure}", reason=failure)
        if self.is_sqlite:
            with self.transaction() as conn:
                conn.exec_driver_sql("SELECT 1")
            return
        try:
            deadline = self.deadline()
            with self._connect(deadline) as conn, self._watched(conn, deadline):
                read_only = conn.exec_driver_sql("SELECT current_setting('transaction_read_only')").scalar()
        except self._unavailable as exc:
            raise StoreUnavailable(self._secret_free(describe(exc)), reason=error_type(exc)) from exc
        if read_only == "on":
            raise StoreUnavailable("the PostgreSQL server is read-only (a standby?)", reason="read_only")

    def start_maintenance(self) -> None:
        """Background upkeep while a receiver or worker runs: SQLite's WAL checkpoints."""
        if self.is_sqlite and self._checkpointer is None and self.engine.url.database:
            self._checkpointer = Checkpointer(self.engine.url.database, self.file_guard)
            self._checkpointer.start()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._watchdog is not None:
            self._watchdog.stop()
        self.engine.dispose()


class HandlerTransaction:
    """One handler run's transaction, opened only if the handler uses its session.

    On SQLite the write lock is taken at the first write and held until `commit` or
    `rollback`; a handler that never writes never takes it.
    """

    def __init__(self, store: Store, *, lock_early: bool = False) -> None:
        self.store = store
        self._engine = store.handler_engine_locked if lock_early else store.handler_engine
        self._session: Session | None = None

    @property
    def used(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self._engine, expire_on_commit=False)
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

    def lock_for_write(self) -> None:
        """SQLite: begin this transaction holding the write lock (or upgrade it now)."""
        if self.store.gate is not None:
            prepare_write(self.session.connection(), self.store.gate, self.store.gate.patience)

    def executor(self) -> Executor:
        """Runs payhook.sql statements in this transaction (the handler's `ctx.execute`)."""
        return Executor(self.session.connection(), self.store.gate)

    def cursor_for_write(self) -> Any:
        """The transaction's DBAPI cursor, ready to write (for the core's success mark)."""
        self.lock_for_write()
        return self.session.connection().connection.cursor()

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
