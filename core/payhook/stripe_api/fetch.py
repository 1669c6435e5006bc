"""Re-retrieving an event's object for handlers (`ctx.fetch_latest()`), gently.

A burst of events about one object (say `payment_intent.*` during checkout) would have every
handler ask for the same object at once: identical requests in flight are made once and
share the answer. And each tenant's calls are held to a rate, so a backlog drained at full
speed stays under Stripe's per-account limit instead of turning into 429s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Coalescer", "RateLimiter"]

T = TypeVar("T")


class RateLimiter:
    """At most `rate` acquisitions per second on average, with bursts of up to `rate`."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = rate
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait until a call may go out."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self._sleep(wait)


class Coalescer:
    """Runs one call per key at a time; callers arriving meanwhile get its result (or error)."""

    def __init__(self) -> None:
        self._in_flight: dict[Any, Future[Any]] = {}
        self._lock = threading.Lock()

    def call(self, key: Any, func: Callable[[], T]) -> T:
        with self._lock:
            pending = self._in_flight.get(key)
            leader = pending is None
            if pending is None:
                pending = self._in_flight[key] = Future()
        if not leader:
            result: T = pending.result()
            return result
        try:
            value = func()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set_result(value)
            return value
        finally:
            with self._lock:
                del self._in_flight[key]
