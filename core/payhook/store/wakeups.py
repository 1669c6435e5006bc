"""Workers wake at once on PostgreSQL: ingest NOTIFYs after commit, workers LISTEN.

Polling stays as the fallback (and is all there is on SQLite, where a worker in the serve
process is woken directly): a listener that lost its connection reconnects with backoff,
and wakes its worker once it is back, for whatever arrived in between.

A transaction pooler (PgBouncer in transaction mode, most managed poolers) cannot pass
notifications on: LISTEN runs on whichever server connection is free, which then serves
other clients. So a listener proves its LISTEN works before relying on it: it sends a
notification of its own through `[database] url`, the way ingest sends them, and waits for
it. None comes back through a pooler: the worker polls, and says so once. `[database]
listen_url`, a direct connection used for LISTEN only, avoids that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from payhook.config import DatabaseConfig
from payhook.store.eventlog import RUNS_CHANNEL

__all__ = ["Listener", "listener_for", "postgres_listener"]

log = logging.getLogger("payhook.worker")

MAX_BACKOFF = 30.0
# How often a listener checks whether it should stop while no notification arrives.
STOP_CHECK = 0.5

Listener = Callable[[threading.Event, threading.Event], None]


def listener_for(config: DatabaseConfig) -> Listener:
    """The listener of a worker on `config`'s PostgreSQL: on `listen_url` when set."""
    return postgres_listener(config.listen_url or config.url, config.connect_timeout, notify_url=config.url)


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_listener(url: str, connect_timeout: float = 5.0, *, notify_url: str | None = None) -> Listener:
    """A `listen(wake, stop)` that sets `wake` on every NOTIFY on the runs channel.

    It LISTENs on `url`, and first checks that a notification sent through `notify_url`
    (where ingest sends them; default `url`) reaches it. If none does (a transaction pooler
    in between), it logs why and returns: the worker polls.
    """
    conninfo = _conninfo(url)
    probe_conninfo = _conninfo(notify_url or url)
    timeout = max(1, round(connect_timeout))

    def listen(wake: threading.Event, stop: threading.Event) -> None:
        import psycopg

        backoff = 0.5
        proven = False
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=timeout) as conn:
                    conn.execute(f"LISTEN {RUNS_CHANNEL}")
                    if not proven:
                        if not _hears_itself(conn, probe_conninfo, timeout):
                            _say_polling(url, notify_url)
                            conn.execute("UNLISTEN *")  # leave no LISTEN on a pooled server connection
                            return
                        proven = True
                    backoff = 0.5
                    wake.set()  # runs may have been stored while nobody listened
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=STOP_CHECK):
                            wake.set()
                            if stop.is_set():
                                break
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (%s); polling until it is back", RUNS_CHANNEL, exc)
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    return listen


def _hears_itself(conn: Any, probe_conninfo: str, timeout: int) -> bool:
    """True if a NOTIFY sent on another connection through `probe_conninfo` reaches `conn`."""
    import psycopg

    probe = f"probe-{uuid.uuid4().hex}"
    with psycopg.connect(probe_conninfo, autocommit=True, connect_timeout=timeout) as sender:
        sender.execute("SELECT pg_notify(%s, %s)", (RUNS_CHANNEL, probe), prepare=False)
    # A server delivers a notification within milliseconds of its commit; a pooler never.
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for note in conn.notifies(timeout=left, stop_after=1):
            if note.payload == probe:
                return True
    return False


def _say_polling(url: str, notify_url: str | None) -> None:
    if notify_url is not None and notify_url != url:
        why = "did not reach the LISTEN on [database] listen_url (is it the same server?)"
    else:
        why = (
            "did not come back to a LISTEN on it, as through a transaction pooler; set "
            "[database] listen_url to a direct connection for workers to wake at once"
        )
    log.warning(
        "no LISTEN: workers poll every [processing] poll_interval; a notification sent through "
        "[database] url %s",
        why,
    )
