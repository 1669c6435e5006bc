"""PostgreSQL, bounded: server-side timeouts, TCP keepalives, and a watchdog for the rest.

A PostgreSQL that stops answering without closing its connections (a frozen server, a
failover that leaves the old address silent, a network that drops packets) would leave a
thread waiting in recv() for as long as TCP allows, which is hours. Three layers bound it:

* the server's own limits: a statement, a lock wait, and a transaction left idle each end
  after `timeout` seconds. On a direct connection they are sent in the startup packet (no
  round trip). A transaction pooler (PgBouncer, a managed pooler) refuses that `options`
  parameter, or drops it, and runs a connection's transactions on whichever server
  connection is free: behind one (found on connect, see `Pooling`) they are set in every
  transaction instead (`SET LOCAL`, sent with its BEGIN, so no round trip of their own);
* TCP keepalives and `tcp_user_timeout`, so a peer that vanished is noticed in about
  that time even by a connection that is only waiting;
* a watchdog that shuts down the socket of a core transaction still running at its
  deadline. Only this one helps when the server is alive at the TCP level but does not
  answer (it is frozen, or a proxy in between is): the blocked thread wakes with an error,
  and the pool drops the connection.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from payhook.config import DatabaseConfig
from payhook.store.compiled import drop_if_broken

__all__ = [
    "Pipelined",
    "Pooling",
    "Statements",
    "Watch",
    "Watchdog",
    "connect_args",
    "limits_statement",
    "make_postgres_engine",
]

log = logging.getLogger("payhook.store")

# Probes a silent peer gets before its connection is declared dead.
KEEPALIVE_PROBES = 3


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def limits_statement(timeout: float) -> str:
    """One statement that bounds the transaction it runs in by `timeout` seconds."""
    # set_config(..., true) is SET LOCAL: it ends with the transaction, so nothing is left
    # on a server connection a pooler lends to someone else next.
    return "SELECT " + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in _limits(timeout))


def _limits(timeout: float) -> list[tuple[str, str]]:
    return [
        ("statement_timeout", f"{_ms(timeout)}ms"),
        ("lock_timeout", f"{_ms(timeout)}ms"),
        # A transaction whose client froze or vanished holds its locks (a unique key another
        # receiver waits on) until the server ends it.
        ("idle_in_transaction_session_timeout", f"{_ms(timeout)}ms"),
    ]


def connect_args(config: DatabaseConfig, timeout: float | None) -> dict[str, Any]:
    """libpq connection parameters for `config`, bounded by `timeout` seconds (None: unbounded)."""
    args: dict[str, Any] = {"connect_timeout": max(1, round(config.connect_timeout))}
    if timeout is None:
        # Unbounded work (a migration) sends no limits a pooler could refuse, so nothing
        # tells whether one is in between: prepare nothing on the server, since behind a
        # transaction pooler the next statement may run on another server connection.
        args["prepare_threshold"] = None
        return args
    # Quiet for half the timeout, then a probe a second (or a tenth of the timeout): a dead
    # peer is noticed within about the timeout.
    idle = max(1, int(timeout / 2))
    interval = max(1, int(timeout / 10))
    args.update(
        keepalives=1,
        keepalives_idle=idle,
        keepalives_interval=interval,
        keepalives_count=KEEPALIVE_PROBES,
        # Data sent and not acknowledged for this long: the peer is gone.
        tcp_user_timeout=_ms(timeout),
        # On a direct connection the limits cost nothing here, once per connection.
        options=" ".join(f"-c {name}={value}" for name, value in _limits(timeout)),
    )
    return args


class Pooling:
    """Whether the store's connections go through a transaction pooler, found on connect.

    A pooler (PgBouncer, a managed one) refuses the `options` startup parameter, or is told
    to drop it (`ignore_startup_parameters`). Either way the limits it carried must be set
    in each transaction instead, and no statement may be prepared on the server: the next
    transaction may run on a server connection that never saw the PREPARE.
    """

    def __init__(self) -> None:
        self.pooled: bool | None = None  # None until the first connection says

    def found(self, pooled: bool) -> None:
        if self.pooled is None:
            self.pooled = pooled
            if pooled:
                log.info(
                    "[database] url goes through a pooler: the store's limits are set in "
                    "each transaction, and no statement is prepared on the server"
                )


def make_postgres_engine(
    config: DatabaseConfig,
    pool_size: int,
    timeout: float | None,
    watchdog: Watchdog | None,
    pooling: Pooling | None = None,
) -> Engine:
    engine = create_engine(
        config.url,
        pool_size=pool_size,
        # Bounded, so many processes on one server stay under its max_connections.
        max_overflow=2,
        pool_timeout=config.connect_timeout,
        connect_args=connect_args(config, timeout),
    )

    @event.listens_for(engine, "connect")
    def _drop_stray_notifications(dbapi: Any, _record: Any) -> None:
        # Behind a transaction pooler, a server connection someone LISTENed on passes its
        # notifications to whichever client it serves next; psycopg would keep them for
        # ever on a connection nobody reads them from.
        dbapi.add_notify_handler(_ignore)

    if watchdog is not None:

        @event.listens_for(engine, "do_connect")
        def _connect_by_the_deadline(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
            # A connection opened for a transaction with a deadline must not take longer
            # (the watchdog sees no socket before it is connected); libpq waits 2 s at least.
            deadline = watchdog.deadline_here()
            if deadline is not None:
                remaining = math.ceil(deadline - time.monotonic())
                params["connect_timeout"] = max(2, min(params["connect_timeout"], remaining))

    if timeout is not None and pooling is not None:
        _find_pooler(engine, pooling, timeout, watchdog)
    return engine


def _find_pooler(engine: Engine, pooling: Pooling, timeout: float, watchdog: Watchdog | None) -> None:
    limits = limits_statement(timeout)
    expected = _limits(timeout)[0][1]

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, args: Any, params: dict[str, Any]) -> Any:
        if pooling.pooled:
            return dialect.connect(*args, **_pooled(params))
        try:
            return dialect.connect(*args, **params)
        except dialect.loaded_dbapi.OperationalError as exc:
            if "unsupported startup parameter" not in str(exc):
                raise
        pooling.found(True)
        return dialect.connect(*args, **_pooled(params))

    @event.listens_for(engine, "connect")
    def _check_the_limits(dbapi: Any, _record: Any) -> None:
        if pooling.pooled is None:
            # Dropped silently? One round trip, on the process's first connection only,
            # by the deadline of the transaction that opened it (a frozen server).
            deadline = watchdog.deadline_here() if watchdog is not None else None
            with nullcontext() if deadline is None else watchdog.watch(dbapi, deadline):  # type: ignore[union-attr]
                shown = dbapi.execute("SHOW statement_timeout", prepare=False).fetchone()[0]
                dbapi.rollback()
            pooling.found(_ms_of(shown) != _ms_of(expected))
        if pooling.pooled:
            dbapi.prepare_threshold = None

    @event.listens_for(engine, "begin")
    def _limits_with_begin(conn: Connection) -> None:
        # Every transaction SQLAlchemy opens (the core's, a handler's session, a ping):
        # in a pipeline, psycopg's BEGIN and the limits leave together and cost the one
        # round trip BEGIN alone cost.
        if not pooling.pooled:
            return
        dbapi: Any = conn.connection.dbapi_connection
        try:
            with dbapi.pipeline():
                dbapi.execute(limits, prepare=False)
        except Exception as exc:
            drop_if_broken(conn, exc, dbapi)
            raise


def _pooled(params: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in params.items() if k != "options"}, "prepare_threshold": None}


def _ms_of(setting: str) -> str:
    """`SHOW`'s way of writing a duration ("1500ms", "10s", "0") made comparable."""
    units = {"ms": 1, "s": 1000, "min": 60000}
    for unit, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if setting.endswith(unit) and setting[: -len(unit)].isdigit():
            return str(int(setting[: -len(unit)]) * factor)
    return setting


def _ignore(_notification: Any) -> None:
    pass


class Pipelined:
    """A pipelined transaction: its cursor, and `sync` to wait for everything sent so far."""

    __slots__ = ("_pipeline", "cursor")

    def __init__(self, cursor: Any, pipeline: Any) -> None:
        self.cursor = cursor
        self._pipeline = pipeline

    def sync(self) -> None:
        self._pipeline.sync()

    def waiting(self) -> Any:
        """A cursor whose every statement waits for its result (say, to read rowcount)."""
        return _Waiting(self)


class Statements:
    """Statements that each take effect on their own: a cursor that waits for every result.

    In autocommit mode each statement is its own transaction; `bounded` runs them in one
    pipelined transaction instead, which can carry the server-side limits.
    """

    __slots__ = ("cursor",)

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    @classmethod
    def bounded(cls, txn: Pipelined) -> Statements:
        return cls(_Waiting(txn))

    def waiting(self) -> Any:
        return self.cursor


class _Waiting:
    __slots__ = ("_txn",)

    def __init__(self, txn: Pipelined) -> None:
        self._txn = txn

    def execute(self, query: Any, params: Any = None) -> None:
        self._txn.cursor.execute(query, params)
        self._txn.sync()

    def fetchone(self) -> Any:
        return self._txn.cursor.fetchone()

    def fetchall(self) -> Any:
        return self._txn.cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._txn.cursor.rowcount)

    @property
    def connection(self) -> Any:
        return self._txn.cursor.connection


class Watch:
    """One transaction under the watchdog: its deadline and, once known, its socket."""

    __slots__ = ("cut", "deadline", "fileno")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fileno: int | None = None
        self.cut = False  # True once the watchdog shut the socket down


class Watchdog:
    """Shuts down the socket of every watched transaction still running at its deadline.

    One thread per store, started on first use. It sleeps until the earliest deadline of
    the transactions in progress; most end long before theirs, so it wakes rarely.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watches: set[Watch] = set()
        self._next_wake = math.inf
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._here = threading.local()

    @contextmanager
    def connecting(self, deadline: float | None) -> Iterator[None]:
        """Within the block, a connection this thread opens is bounded by `deadline` too."""
        previous = getattr(self._here, "deadline", None)
        self._here.deadline = deadline
        try:
            yield
        finally:
            self._here.deadline = previous

    def deadline_here(self) -> float | None:
        deadline: float | None = getattr(self._here, "deadline", None)
        return deadline

    @contextmanager
    def watch(self, dbapi_connection: Any, deadline: float) -> Iterator[Watch]:
        """Watch `dbapi_connection` (a psycopg connection) until the block ends.

        The block must end before the connection goes back to the pool: a socket is shut
        down only while its watch is open, so never after the connection was reused.
        """
        watch = Watch(deadline)
        try:
            watch.fileno = int(dbapi_connection.pgconn.socket)
        except Exception:
            watch.fileno = None  # closed already: the first statement will say so
        with self._lock:
            self._watches.add(watch)
            if deadline < self._next_wake:
                self._ensure_thread()
                self._changed.notify()
        try:
            yield watch
        finally:
            with self._lock:
                self._watches.discard(watch)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._changed.notify()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="payhook-store-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                for watch in self._watches:
                    if watch.deadline <= now and not watch.cut:
                        _shut_down(watch)
                pending = [w.deadline for w in self._watches if not w.cut]
                self._next_wake = min(pending, default=math.inf)
                wait = None if self._next_wake == math.inf else max(0.0, self._next_wake - now)
                self._changed.wait(wait)
            self._next_wake = math.inf


def _shut_down(watch: Watch) -> None:
    watch.cut = True
    if watch.fileno is None:
        return
    try:
        # A duplicate descriptor: shutting it down ends the connection for its owner too
        # (shutdown acts on the socket, not the descriptor), while the owner's descriptor
        # stays valid until the owner closes it.
        with socket.socket(fileno=os.dup(watch.fileno)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its owner
