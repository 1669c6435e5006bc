"""The ingest write: verified deliveries and their pending runs, on the raw driver.

This is the one write on the request path, so it skips the ORM and SQLAlchemy's per-call
execution machinery (about 70 µs a statement here, against about 10 µs on the DBAPI
cursor). The statements are still built from the tables' Core definitions, compiled once for
the engine's dialect.

On PostgreSQL a batch costs two round trips, however many deliveries it holds: BEGIN and
one multi-row INSERT for the events; then, pipelined, all of their runs, the workers'
wake-up call and COMMIT. A batch that creates no runs is the INSERT alone, in autocommit
mode: one round trip. On SQLite, in process, a round trip costs nothing, and one
statement per event is faster than one for the batch (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from payhook.store.compiled import Compiled, insert_keys
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.models import utcnow
from payhook.store.postgres import Pipelined, Statements
from payhook.store.runs import EVENT, HandlerName, Lease, Runs

__all__ = ["RUNS_CHANNEL", "Delivery", "EventLog", "IngestResult"]

# Ingest NOTIFYs this channel (PostgreSQL) when it committed new runs; workers LISTEN to it.
RUNS_CHANNEL = "payhook_runs"


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
    handlers: tuple[HandlerName, ...]
    # "webhook", or "reconcile" for an event listed from the API (see reconcile.py).
    source: str = "webhook"
    # Set by guards.check: why the event gets no runs, and whether its API version is off.
    ignored_reason: str | None = None
    api_version_mismatch: bool = False
    # Inline mode: the storing request's claim. Its runs are created, or on a redelivery
    # adopted, `running` under it, so no worker takes them from the request (see runs.py).
    lease: Lease | None = None


@dataclass(frozen=True)
class IngestResult:
    status: Literal["accepted", "duplicate", "ignored"]
    event_id: int
    runs: int = 0
    rearmed: int = 0


DEADLOCK_RETRIES = 3
# PostgreSQL aborts one side of a deadlock or serialization conflict; trying again succeeds.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})

Key = tuple[str, str]


class _Conflict(Exception):
    pass


def _key(delivery: Delivery) -> Key:
    return (delivery.tenant, delivery.stripe_event_id)


EVENT_KEYS = insert_keys(EVENT)


def _row(delivery: Delivery, now: datetime) -> dict[str, Any]:
    """The event's columns, as `EVENT_KEYS` names them."""
    return {
        "tenant": delivery.tenant,
        "stripe_event_id": delivery.stripe_event_id,
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
        "source": delivery.source,
        "ignored_reason": delivery.ignored_reason,
        "api_version_mismatch": delivery.api_version_mismatch,
    }


class EventLog:
    """Appends deliveries: insert-or-ignore on `(tenant, event id)`, runs only for new events."""

    def __init__(self, store: Store, runs: Runs) -> None:
        self.store = store
        self.runs = runs
        self._dialect = store.engine.dialect
        self._insert = sqlite.insert if store.is_sqlite else postgresql.insert
        dbapi: Any = self._dialect.dbapi
        self._dbapi = dbapi
        # psycopg's pipeline mode needs libpq 14 or later; without it, one event at a time.
        self.batched = not store.is_sqlite and bool(dbapi.Pipeline.is_supported())
        # The batch's INSERT has a dozen parameters per row: past 50, psycopg no longer
        # caches its translation of %(name)s placeholders and parses the whole statement
        # again at every execute, which cost more than the rest of the write. Compiled with
        # PostgreSQL's own $1, $2 ... and run on a RawCursor, it is sent as it is.
        self._native = PGDialect_psycopg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        self._insert_event = Compiled(
            self._insert(EVENT)
            .on_conflict_do_nothing(index_elements=["tenant", "stripe_event_id"])
            .returning(EVENT.c.id),
            self._dialect,
            EVENT_KEYS,
        )
        self._insert_rows: dict[int, Compiled] = {}
        self._find_event = Compiled(
            select(EVENT.c.id).where(
                EVENT.c.tenant == bindparam("tenant"),
                EVENT.c.stripe_event_id == bindparam("stripe_event_id"),
            ),
            self._dialect,
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
                    raise StoreUnavailable(
                        "the database kept aborting the write as a deadlock", reason="deadlock"
                    ) from None
        results: list[IngestResult] = [stored[0]] * len(deliveries)
        for position, index in enumerate(order):
            results[index] = stored[position]
        return results

    def _append_in_order(self, deliveries: list[Delivery], deadline: float | None) -> list[IngestResult]:
        now = utcnow()
        if self.batched and not any(delivery.handlers or delivery.lease for delivery in deliveries):
            # No new event can need runs: the one INSERT is the whole transaction. (A
            # redelivery's re-arm is one statement of its own, atomic by itself; an inline
            # redelivery's re-arm and adoption need a transaction.)
            with self.store.statements(deadline) as txn, self._conflicts():
                return self._append_batch(txn, deliveries, now)
        if self.batched:
            with self.store.pipelined_transaction(deadline) as txn, self._conflicts():
                return self._append_batch(txn, deliveries, now)
        with self.store.transaction(deadline) as conn, self._conflicts():
            cursor = conn.connection.cursor()
            try:
                return [self._append_one(cursor, delivery, now) for delivery in deliveries]
            finally:
                cursor.close()

    @contextmanager
    def _conflicts(self) -> Iterator[None]:
        """A deadlock or serialization failure becomes _Conflict: the batch is tried again."""
        try:
            yield
        except self.store.driver_errors as exc:
            if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES:
                raise _Conflict from exc
            raise

    # -- one statement per event (SQLite) ------------------------------------------------

    def _append_one(self, cursor: Any, delivery: Delivery, now: datetime) -> IngestResult:
        cursor.execute(self._insert_event.sql, self._insert_event.params(_row(delivery, now)))
        row = cursor.fetchone()
        if row is None:
            # Someone stored it first (another request, another process, or this very batch).
            existing = self._find(cursor, _key(delivery))
            rearmed = self.runs.rearm(cursor, existing, now)
            if delivery.lease is not None:
                self.runs.adopt(cursor, existing, now, delivery.lease)
            return IngestResult("duplicate", existing, rearmed=rearmed)
        event_id = int(row[0])
        if not delivery.handlers:
            return IngestResult("ignored", event_id)
        return IngestResult("accepted", event_id, runs=self._create(cursor, event_id, delivery, now))

    def _create(self, cursor: Any, event_id: int, delivery: Delivery, now: datetime) -> int:
        if delivery.lease is None:
            return self.runs.create(cursor, event_id, delivery.handlers, now)
        return self.runs.create_owned(cursor, event_id, delivery.handlers, now, delivery.lease)

    # -- one statement per batch (PostgreSQL) --------------------------------------------

    def _append_batch(
        self, txn: Pipelined | Statements, deliveries: list[Delivery], now: datetime
    ) -> list[IngestResult]:
        """All the batch's events in one INSERT (sent with BEGIN), then all their runs (sent
        with COMMIT): two round trips; one when there are no runs to create."""
        cursor = txn.cursor
        # A key twice in one batch is inserted once (in key order, like the rest); its later
        # copies are duplicates of it.
        first: dict[Key, Delivery] = {}
        for delivery in deliveries:
            first.setdefault(_key(delivery), delivery)
        insert = self._insert_rows_for(len(first))
        values = {
            f"{name}_{index}": value
            for index, delivery in enumerate(first.values())
            for name, value in _row(delivery, now).items()
        }
        with self._dbapi.RawCursor(cursor.connection) as native:
            native.execute(insert.sql, insert.params(values))
            rows = native.fetchall()
        ids: dict[Key, int] = {(tenant, event): int(id_) for id_, tenant, event in rows}
        new = set(ids)
        rearmed: dict[Key, int] = {}
        for key in first:
            if key not in new:
                # Stored before (another request, another process): a redelivery. Rare, so
                # a round trip or two each is fine.
                ids[key] = self._find(cursor, key)
                rearmed[key] = self.runs.rearm(txn.waiting(), ids[key], now)
                lease = first[key].lease
                if lease is not None:
                    self.runs.adopt(cursor, ids[key], now, lease)
        created: dict[Key, int] = {}
        for key, delivery in first.items():
            if key in new and delivery.handlers:
                created[key] = self._create(cursor, ids[key], delivery, now)
        if any(first[key].lease is None for key in created):
            # Delivered at commit, so a worker that LISTENs wakes when the runs are there
            # (runs an inline request holds are not there for it: no call for those alone).
            cursor.execute("SELECT pg_notify(%(channel)s, '')", {"channel": RUNS_CHANNEL})
        results = []
        answered: set[Key] = set()
        for delivery in deliveries:
            key = _key(delivery)
            if key not in new or key in answered:
                results.append(IngestResult("duplicate", ids[key], rearmed=rearmed.pop(key, 0)))
            elif key in created:
                results.append(IngestResult("accepted", ids[key], runs=created[key]))
            else:
                results.append(IngestResult("ignored", ids[key]))
            answered.add(key)
        return results

    def _insert_rows_for(self, count: int) -> Compiled:
        """INSERT … VALUES with `count` rows, ON CONFLICT DO NOTHING, compiled on first use."""
        compiled = self._insert_rows.get(count)
        if compiled is None:
            rows = [
                {name: bindparam(f"{name}_{index}", type_=EVENT.c[name].type) for name in EVENT_KEYS}
                for index in range(count)
            ]
            statement = (
                self._insert(EVENT)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["tenant", "stripe_event_id"])
                .returning(EVENT.c.id, EVENT.c.tenant, EVENT.c.stripe_event_id)
            )
            compiled = self._insert_rows[count] = Compiled(statement, self._native)
        return compiled

    def _find(self, cursor: Any, key: Key) -> int:
        tenant, stripe_event_id = key
        params = self._find_event.params({"tenant": tenant, "stripe_event_id": stripe_event_id})
        cursor.execute(self._find_event.sql, params)
        return int(cursor.fetchone()[0])
