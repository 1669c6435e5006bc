"""What the database says after a run: was every event stored once, did handlers finish."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, text

__all__ = [
    "Drain",
    "StoreCheck",
    "check_stored",
    "connect",
    "hits",
    "last_event_id",
    "mean_batch",
    "run_statuses",
    "wait_drained",
]

# Coarse on purpose: every poll is a query the server's database also has to answer.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class StoreCheck:
    sent: int
    stored: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def ok(self) -> bool:
        return self.sent == self.stored and not (self.missing or self.duplicated or self.unexpected)


@dataclass(frozen=True)
class Drain:
    seconds: float | None  # None: not drained before the timeout
    statuses: dict[str, int]


def connect(url: str) -> Engine:
    return create_engine(url, pool_size=1)


def check_stored(engine: Engine, sent: Iterable[tuple[str, str]]) -> StoreCheck:
    """Compare the (tenant, event id) pairs sent with the rows of `payhook_event`."""
    expected = set(sent)
    with engine.connect() as conn:
        query = "SELECT tenant, stripe_event_id, COUNT(*) FROM payhook_event GROUP BY tenant, stripe_event_id"
        rows = conn.execute(text(query)).all()
    stored = {(tenant, event_id): count for tenant, event_id, count in rows}
    return StoreCheck(
        sent=len(expected),
        stored=sum(stored.values()),
        missing=len(expected - stored.keys()),
        duplicated=sum(1 for count in stored.values() if count > 1),
        unexpected=len(stored.keys() - expected),
    )


def last_event_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM payhook_event")).scalar_one())


def mean_batch(engine: Engine, after_id: int) -> float | None:
    """Events per ingest transaction since `after_id`.

    Relies on a detail of the core: `Store.ingest` stamps every event of one transaction
    with the same `received_at`, so distinct stamps count transactions.
    """
    with engine.connect() as conn:
        query = "SELECT COUNT(*), COUNT(DISTINCT received_at) FROM payhook_event WHERE id > :after"
        events, batches = conn.execute(text(query), {"after": after_id}).one()
    return events / batches if batches else None


def run_statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, COUNT(*) FROM payhook_handler_run GROUP BY status")).all()
    return {status: count for status, count in rows}


def hits(engine: Engine) -> int:
    """Rows the bench plugin's handlers wrote."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM bench_hit")).scalar_one())


def wait_drained(engine: Engine, expected: int, since: float, timeout: float) -> Drain:
    """Seconds from `since` (time.monotonic()) until `expected` runs have succeeded."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = run_statuses(engine)
        now = time.monotonic()
        if statuses.get("succeeded", 0) >= expected:
            return Drain(max(0.0, now - since), statuses)
        if now > deadline:
            return Drain(None, statuses)
        time.sleep(POLL_SECONDS)
