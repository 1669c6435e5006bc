"""The ingest write: verified deliveries and their pending runs, on the raw driver.

This is the one write on the request path, so it skips the ORM and SQLAlchemy's per-call
execution machinery (about 70 µs a statement here, against about 10 µs on the DBAPI
cursor). The statements are still built from the tables' Core definitions, compiled once for
the engine's dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from .compiled import Compiled, insert_keys
from .models import utcnow
from .runs import EVENT, Runs
from .store import Store, StoreUnavailable
from .types import Handler

__all__ = ["Delivery", "EventLog", "IngestResult"]


@dataclass(frozen=True)
class Delivery:
    """A verified, parsed event ready to be stored."""

    tenant: str
    stripe_event_id: str
    type: str
    livemode: bool
    api_version: str | None
    account: str | None
    object_id: str | None
    created: datetime | None
    payload: str
    secret_index: int
    handlers: tuple[Handler, ...]


@dataclass(frozen=True)
class IngestResult:
    status: Literal["accepted", "duplicate", "ignored"]
    event_id: int
    runs: int = 0
    rearmed: int = 0


DEADLOCK_RETRIES = 3
# PostgreSQL aborts one side of a deadlock or serialization conflict; trying again succeeds.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


class _Conflict(Exception):
    pass


def _key(delivery: Delivery) -> tuple[str, str]:
    return (delivery.tenant, delivery.stripe_event_id)


EVENT_KEYS = insert_keys(EVENT)


class EventLog:
    """Appends deliveries: insert-or-ignore on `(tenant, event id)`, runs only for new events."""

    def __init__(self, store: Store, runs: Runs) -> None:
        self.store = store
        self.runs = runs
        dialect = store.engine.dialect
        insert = sqlite.insert if store.is_sqlite else postgresql.insert
        self._insert_event = Compiled(
            insert(EVENT)
            .on_conflict_do_nothing(index_elements=["tenant", "stripe_event_id"])
            .returning(EVENT.c.id),
            dialect,
            EVENT_KEYS,
        )
        self._find_event = Compiled(
            select(EVENT.c.id).where(
                EVENT.c.tenant == bindparam("tenant"),
                EVENT.c.stripe_event_id == bindparam("stripe_event_id"),
            ),
            dialect,
        )

    def append(self, deliveries: Sequence[Delivery], *, deadline: float | None = None) -> list[IngestResult]:
        """Store deliveries in one transaction; duplicates are detected, never raised.

        The transaction must be over by `deadline` (time.monotonic(); default: the store's
        timeout from now), or it fails with StoreUnavailable.
        """
        # Two receivers writing overlapping batches must take the unique-key locks in the
        # same order, or each waits on the other's uncommitted insert: a deadlock.
        order = sorted(range(len(deliveries)), key=lambda i: _key(deliveries[i]))
        if deadline is None:
            deadline = self.store.deadline()
        for attempt in range(DEADLOCK_RETRIES):
            try:
                stored = self._append_in_order([deliveries[i] for i in order], deadline)
                break
            except _Conflict:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise StoreUnavailable("the database kept aborting the write as a deadlock") from None
        results: list[IngestResult] = [stored[0]] * len(deliveries)
        for position, index in enumerate(order):
            results[index] = stored[position]
        return results

    def _append_in_order(self, deliveries: list[Delivery], deadline: float | None) -> list[IngestResult]:
        now = utcnow()
        with self.store.transaction(deadline) as conn:
            cursor = conn.connection.cursor()
            try:
                return [self._append_one(cursor, delivery, now) for delivery in deliveries]
            except self.store._driver_errors as exc:
                if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES:
                    raise _Conflict from exc
                raise
            finally:
                cursor.close()

    def _append_one(self, cursor: Any, delivery: Delivery, now: datetime) -> IngestResult:
        key = {"tenant": delivery.tenant, "stripe_event_id": delivery.stripe_event_id}
        values = {
            **key,
            "type": delivery.type,
            "livemode": delivery.livemode,
            "api_version": delivery.api_version,
            "account": delivery.account,
            "object_id": delivery.object_id,
            "created": delivery.created,
            "received_at": now,
            "payload": delivery.payload,
            "secret_index": delivery.secret_index,
            "pruned_at": None,
        }
        cursor.execute(self._insert_event.sql, self._insert_event.params(values))
        row = cursor.fetchone()
        if row is None:
            # Someone stored it first (another request, another process, or this very batch).
            cursor.execute(self._find_event.sql, self._find_event.params(key))
            existing = int(cursor.fetchone()[0])
            return IngestResult("duplicate", existing, rearmed=self.runs.rearm(cursor, existing, now))
        event_id = int(row[0])
        if not delivery.handlers:
            return IngestResult("ignored", event_id)
        return IngestResult(
            "accepted", event_id, runs=self.runs.create(cursor, event_id, delivery.handlers, now)
        )
