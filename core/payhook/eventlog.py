"""The ingest write: verified deliveries and their pending runs, on the raw driver.

This is the one write on the request path, so it skips the ORM and SQLAlchemy's per-call
execution machinery (about 70 µs a statement here, against about 10 µs on the DBAPI
cursor). The statements are still built from the tables' Core definitions, compiled once for
the engine's dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from .models import RunStatus, UTCDateTime, utcnow
from .store import EVENT, RUN, Store, StoreUnavailable
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


class _Compiled:
    """A statement compiled for one dialect, taking its parameters by name."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: list[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql = str(compiled)
        # qmark drivers (sqlite3) take a tuple in this order; pyformat ones (psycopg) a dict.
        positional = getattr(compiled, "positiontup", None)
        self.order: list[str] | None = list(positional) if positional else None
        # Constants in the statement (say, status = 'dead') are bind parameters too.
        self.constants = {name: value for name, value in compiled.params.items() if value is not None}

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self.constants, **values} if self.constants else values
        return merged if self.order is None else tuple(merged[name] for name in self.order)


EVENT_KEYS = [
    "tenant", "stripe_event_id", "type", "livemode", "api_version", "account", "object_id",
    "created", "received_at", "payload", "secret_index", "pruned_at",
]  # fmt: skip
RUN_KEYS = [
    "event_id", "plugin", "handler", "status", "attempts", "attempt_base", "next_attempt_at",
    "created_at", "replay_count",
]  # fmt: skip


class EventLog:
    """Appends deliveries: insert-or-ignore on `(tenant, event id)`, runs only for new events."""

    def __init__(self, store: Store) -> None:
        self.store = store
        dialect = store.engine.dialect
        insert = sqlite.insert if store.is_sqlite else postgresql.insert
        self._insert_event = _Compiled(
            insert(EVENT)
            .on_conflict_do_nothing(index_elements=["tenant", "stripe_event_id"])
            .returning(EVENT.c.id),
            dialect,
            EVENT_KEYS,
        )
        self._insert_run = _Compiled(RUN.insert(), dialect, RUN_KEYS)
        self._find_event = _Compiled(
            select(EVENT.c.id).where(
                EVENT.c.tenant == bindparam("tenant"),
                EVENT.c.stripe_event_id == bindparam("stripe_event_id"),
            ),
            dialect,
        )
        # A redelivery of an event whose runs are dead gives them a fresh retry budget.
        self._rearm = _Compiled(
            update(RUN)
            .where(RUN.c.event_id == bindparam("b_event_id"), RUN.c.status == RunStatus.DEAD.value)
            .values(
                status=RunStatus.PENDING.value,
                attempt_base=RUN.c.attempts,
                next_attempt_at=bindparam("b_now", type_=UTCDateTime()),
            ),
            dialect,
        )
        dbapi: Any = store.engine.dialect.dbapi
        self._unavailable: tuple[type[Exception], ...] = (dbapi.OperationalError, dbapi.InterfaceError)
        # Times go through the column type's own conversion (naive UTC text on SQLite).
        self._time: Callable[[datetime | None], Any] = UTCDateTime().bind_processor(dialect) or (
            lambda value: value
        )

    def append(self, deliveries: Sequence[Delivery]) -> list[IngestResult]:
        """Store deliveries in one transaction; duplicates are detected, never raised."""
        # Two receivers writing overlapping batches must take the unique-key locks in the
        # same order, or each waits on the other's uncommitted insert: a deadlock.
        order = sorted(range(len(deliveries)), key=lambda i: _key(deliveries[i]))
        for attempt in range(DEADLOCK_RETRIES):
            try:
                stored = self._append_in_order([deliveries[i] for i in order])
                break
            except _Conflict:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise StoreUnavailable("the database kept aborting the write as a deadlock") from None
        results: list[IngestResult] = [stored[0]] * len(deliveries)
        for position, index in enumerate(order):
            results[index] = stored[position]
        return results

    def _append_in_order(self, deliveries: list[Delivery]) -> list[IngestResult]:
        now = self._time(utcnow())
        with self.store.transaction() as conn:
            cursor = conn.connection.cursor()
            try:
                return [self._append_one(cursor, delivery, now) for delivery in deliveries]
            except self._unavailable as exc:
                if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES:
                    raise _Conflict from exc
                # Raw driver errors bypass SQLAlchemy: drop a dead connection from the pool
                # ourselves, and report the outage the way the rest of the store does.
                if self.store.engine.dialect.is_disconnect(exc, conn.connection, cursor):  # type: ignore[arg-type]
                    conn.invalidate(exc)
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
            finally:
                cursor.close()

    def _append_one(self, cursor: Any, delivery: Delivery, now: Any) -> IngestResult:
        key = {"tenant": delivery.tenant, "stripe_event_id": delivery.stripe_event_id}
        values = {
            **key,
            "type": delivery.type,
            "livemode": delivery.livemode,
            "api_version": delivery.api_version,
            "account": delivery.account,
            "object_id": delivery.object_id,
            "created": self._time(delivery.created),
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
            cursor.execute(self._rearm.sql, self._rearm.params({"b_event_id": existing, "b_now": now}))
            return IngestResult("duplicate", existing, rearmed=max(cursor.rowcount, 0))
        event_id = int(row[0])
        if not delivery.handlers:
            return IngestResult("ignored", event_id)
        cursor.executemany(
            self._insert_run.sql,
            [
                self._insert_run.params(
                    {
                        "event_id": event_id,
                        "plugin": handler.plugin,
                        "handler": handler.name,
                        "status": RunStatus.PENDING.value,
                        "attempts": 0,
                        "attempt_base": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "replay_count": 0,
                    }
                )
                for handler in delivery.handlers
            ],
        )
        return IngestResult("accepted", event_id, runs=len(delivery.handlers))
