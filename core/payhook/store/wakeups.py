"""Workers wake at once on PostgreSQL: ingest NOTIFYs after commit, workers LISTEN.

Polling stays as the fallback (and is all there is on SQLite, where a worker in the serve
process is woken directly): a listener that lost its connection reconnects with backoff,
and wakes its worker once it is back, for whatever arrived in between.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import make_url

from payhook.store.eventlog import RUNS_CHANNEL

__all__ = ["postgres_listener"]

log = logging.getLogger("payhook.worker")

MAX_BACKOFF = 30.0
# How often a listener checks whether it should stop while no notification arrives.
STOP_CHECK = 0.5

Listener = Callable[[threading.Event, threading.Event], None]


def postgres_listener(url: str, connect_timeout: float = 5.0) -> Listener:
    """A `listen(wake, stop)` that sets `wake` on every NOTIFY on the runs channel."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def listen(wake: threading.Event, stop: threading.Event) -> None:
        import psycopg

        backoff = 0.5
        while not stop.is_set():
            try:
                with psycopg.connect(
                    conninfo, autocommit=True, connect_timeout=max(1, round(connect_timeout))
                ) as conn:
                    conn.execute(f"LISTEN {RUNS_CHANNEL}")
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
