"""PostgreSQL, bounded: server-side timeouts, TCP keepalives, and a watchdog for the rest.

A PostgreSQL that stops answering without closing its connections (a frozen server, a
failover that leaves the old address silent, a network that drops packets) would leave a
thread waiting in recv() for as long as TCP allows, which is hours. Three layers bound it:

* the server's own limits, sent in the startup packet (no extra round trip): a statement,
  a lock wait, and a transaction left idle each end after `timeout` seconds;
* TCP keepalives and `tcp_user_timeout`, so a peer that vanished is noticed in about
  that time even by a connection that is only waiting;
* a watchdog that shuts down the socket of a core transaction still running at its
  deadline. Only this one helps when the server is alive at the TCP level but does not
  answer (it is frozen, or a proxy in between is): the blocked thread wakes with an error,
  and the pool drops the connection.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event

from payhook.config import DatabaseConfig

__all__ = ["Pipelined", "Statements", "Watch", "Watchdog", "connect_args", "make_postgres_engine"]

# Probes a silent peer gets before its connection is declared dead.
KEEPALIVE_PROBES = 3


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def connect_args(config: DatabaseConfig, timeout: float | None) -> dict[str, Any]:
    """libpq connection parameters for `config`, bounded by `timeout` seconds (None: unbounded)."""
    args: dict[str, Any] = {"connect_timeout": max(1, round(config.connect_timeout))}
    if timeout is None:
        return args
    limits = {
        "statement_timeout": _ms(timeout),
        "lock_timeout": _ms(timeout),
        # A transaction whose client froze or vanished holds its locks (a unique key another
        # receiver waits on) until the server ends it.
        "idle_in_transaction_session_timeout": _ms(timeout),
    }
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
        options=" ".join(f"-c {name}={value}" for name, value in limits.items()),
    )
    return args


def make_postgres_engine(
    config: DatabaseConfig, pool_size: int, timeout: float | None, watchdog: Watchdog | None
) -> Engine:
    engine = create_engine(
        config.url,
        pool_size=pool_size,
        # Bounded, so many processes on one server stay under its max_connections.
        max_overflow=2,
        pool_timeout=config.connect_timeout,
        connect_args=connect_args(config, timeout),
    )
    if watchdog is not None:

        @event.listens_for(engine, "do_connect")
        def _connect_by_the_deadline(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
            # A connection opened for a transaction with a deadline must not take longer
            # (the watchdog sees no socket before it is connected); libpq waits 2 s at least.
            deadline = watchdog.deadline_here()
            if deadline is not None:
                remaining = math.ceil(deadline - time.monotonic())
                params["connect_timeout"] = max(2, min(params["connect_timeout"], remaining))

    return engine


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
    """Statements that each commit on their own: a cursor that waits for every result."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

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

    @property
    def rowcount(self) -> int:
        return int(self._txn.cursor.rowcount)


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
