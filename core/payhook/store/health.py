"""Whether the store takes writes: the causes that outlast one request, and the last one seen.

A read answers while the disk is full or the database is read-only, so `/healthz` cannot
learn these from a ping. The store remembers the last write that failed for such a cause
and `/healthz` answers 503 with it until a write succeeds again, or for `HOLD` seconds:
with a load balancer sending nothing, no delivery would ever try again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

__all__ = ["HOLD", "WriteHealth", "lasting_cause", "named_reason"]

# How long a failed write keeps /healthz at 503 when no write succeeds after it.
HOLD = 30.0

# SQLite's primary result codes (the low byte of sqlite_errorcode) that no retry cures.
_SQLITE_CAUSES = {8: "read_only", 10: "io_error", 13: "disk_full", 14: "cannot_open"}
# PostgreSQL: SQLSTATE class 53 is insufficient resources (53100: disk full).
_POSTGRES_CAUSES = {"53100": "disk_full", "25006": "read_only"}


def lasting_cause(exc: BaseException) -> str | None:
    """The name of a cause that a retry will not cure (disk full, read-only...), if it is one."""
    for seen in _chain(exc):
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_CAUSES:
            return _SQLITE_CAUSES[code & 0xFF]
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate in _POSTGRES_CAUSES:
            return _POSTGRES_CAUSES[sqlstate]
    return None


def named_reason(exc: BaseException) -> str | None:
    """The `reason` an error of payhook's own carries (sqlite_files.StoreFileProblem, say)."""
    for seen in _chain(exc):
        reason = getattr(seen, "reason", None)
        if isinstance(reason, str):
            return reason
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps (SQLAlchemy's `orig`) or was raised from."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = getattr(seen, "orig", None) or seen.__cause__


class WriteHealth:
    """The last write's outcome, when it failed for a lasting cause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failure: tuple[str, float] | None = None  # (cause, time.monotonic())

    def failed(self, cause: str) -> None:
        with self._lock:
            self._failure = (cause, time.monotonic())

    def succeeded(self) -> None:
        if self._failure is not None:  # the usual case costs one attribute read
            with self._lock:
                self._failure = None

    def failure(self) -> str | None:
        """The cause of the last write's failure, unless a write succeeded or HOLD passed."""
        failure = self._failure
        if failure is None or time.monotonic() - failure[1] > HOLD:
            return None
        return failure[0]
