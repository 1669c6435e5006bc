"""The handler-run lifecycle: every insert and status change of `payhook_handler_run`.

A handler run is one (event, plugin, handler) triple. Its states and the named transitions
between them::

                     create (ingest, replay, reconcile)
                                   │
                                   ▼
       ┌──── release ────── ┌─────────┐ ◀──── rearm (a redelivery) ─────── dead
       │  (never started)   │ pending │ ◀──── replay ── failed, dead, succeeded, skipped
       ▼                    └─────────┘
    pending, or failed          │ claim (due; or running with an expired lease)
                                │ adopt (an inline redelivery; from failed too)
                                ▼
  create_owned ──────────▶ ┌─────────┐ ── renew_lease / extend_lease ──▶ running
  (ingest, inline tenant)  │ running │ ── succeed ─────▶ succeeded
                           └─────────┘ ── skip ────────▶ skipped
                                │      ── fail ────────▶ failed (retry due later) or dead
                                │      ── abandon ─────▶ failed (due now; worker stopped)
                                └───── note_lost_attempt (reclaimed) ──▶ running or dead

`release` undoes the claim's attempt: the run is `failed` again if an earlier attempt of its
current budget failed, else `pending`. A lost attempt (`note_lost_attempt`) is recorded under
its own number, the one before the reclaiming claim's; when it was the last of the budget the
run is dead and the reclaiming claim's attempt, never started, is undone.

Every transition out of `running` names the claim it acts for (the lease token), so a
worker that lost its lease can never overwrite what the run's new owner did.

An inline tenant's runs belong to the request that stored the event from the moment they
exist: `create_owned` inserts them `running` under that request's `Lease`, and on a
redelivery `adopt` takes the event's waiting runs under it in the ingest transaction (after
`rearm`). A worker's claim matches `running` only once its lease has expired, so it cannot
take them while the request holds them; a request that dies leaves them to the worker as any
lost lease, and one that gives up (`release`) leaves them due at once.

The tables `CREATIONS` and `TRANSITIONS` below are the same picture as data; the statements
are built from them, and a test walks them. No other module writes `payhook_handler_run`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import ColumnElement

from payhook.store.compiled import Compiled, insert_keys
from payhook.store.models import Event, HandlerRun, RunFailure, RunStatus, UTCDateTime, utcnow
from payhook.stripe_api.events import Event as StripeEvent

__all__ = [
    "CREATIONS",
    "FAILURE_ROWS_PER_RUN",
    "MESSAGE_LIMIT",
    "TRACEBACK_LIMIT",
    "TRANSITIONS",
    "ClaimedRun",
    "EventPayload",
    "Failure",
    "HandlerName",
    "IllegalTransition",
    "Lease",
    "Runs",
    "newer_event_applied",
    "runs_of",
    "storable",
]

EVENT = Event.__table__  # type: ignore[attr-defined]
RUN = HandlerRun.__table__  # type: ignore[attr-defined]
FAILURE = RunFailure.__table__  # type: ignore[attr-defined]

S = RunStatus
# insert -> the state a new run starts in
CREATIONS: dict[str, RunStatus] = {
    "create": S.PENDING,
    "create_owned": S.RUNNING,  # under the storing request's lease (inline mode)
}
# transition -> (the states it may start from, the state it leads to; None: decided per call)
TRANSITIONS: dict[str, tuple[frozenset[RunStatus], RunStatus | None]] = {
    "claim": (frozenset({S.PENDING, S.FAILED, S.RUNNING}), S.RUNNING),  # running: lease expired
    "adopt": (frozenset({S.PENDING, S.FAILED}), S.RUNNING),  # whatever the schedule
    "renew_lease": (frozenset({S.RUNNING}), S.RUNNING),
    "extend_lease": (frozenset({S.RUNNING}), S.RUNNING),  # a handler asks (ctx.extend_lease)
    "succeed": (frozenset({S.RUNNING}), S.SUCCEEDED),
    "skip": (frozenset({S.RUNNING}), S.SKIPPED),
    "fail": (frozenset({S.RUNNING}), None),  # failed, or dead when no attempt is left
    "note_lost_attempt": (frozenset({S.RUNNING}), None),  # stays running, or dead
    "release": (frozenset({S.RUNNING}), None),  # back to pending (or failed) untouched
    "abandon": (frozenset({S.RUNNING}), S.FAILED),  # a failed attempt, due now, never dead
    "rearm": (frozenset({S.DEAD}), S.PENDING),
    "replay": (frozenset({S.FAILED, S.DEAD, S.SUCCEEDED, S.SKIPPED}), S.PENDING),
}
DUE = (S.PENDING.value, S.FAILED.value)
FINISHED = (S.SUCCEEDED.value, S.SKIPPED.value, S.DEAD.value)
# PostgreSQL: a claim's commit does not wait for the WAL flush (see Runs._claim_without_flush).
CLAIM_COMMIT = "SET LOCAL synchronous_commit TO off"
# What a worker needs of the event a claimed run belongs to.
EVENT_COLUMNS = ("tenant", "stripe_event_id", "type", "payload")
# What it needs of the run (see _claimed_runs).
_RETURNED = (
    RUN.c.id,
    RUN.c.event_id,
    RUN.c.plugin,
    RUN.c.handler,
    RUN.c.attempts,
    RUN.c.attempt_base,
    RUN.c.replay_count,
)


class HandlerName(Protocol):
    """A handler as a run names it: its plugin and its own name (a plugin's `Handler`)."""

    @property
    def plugin(self) -> str: ...

    @property
    def name(self) -> str: ...


class IllegalTransition(Exception):
    """A transition was asked for from a state it does not start from."""


def _sources(transition: str) -> list[str]:
    return sorted(status.value for status in TRANSITIONS[transition][0])


THIN_MARK = '"v2.core.event"'


class EventPayload:
    """A stored event's text, parsed once, on first use, for all the runs that share it.

    Handlers get the same event object: they must treat it as read-only.
    """

    __slots__ = ("_event", "_lock", "_thin", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._event: StripeEvent | None = None
        self._thin: bool | None = None
        self._lock = threading.Lock()

    @property
    def is_thin(self) -> bool:
        """Whether this is a thin event notification (`"object": "v2.core.event"`)."""
        if self._thin is None:
            # The substring test spares parsing every snapshot event a second time.
            self._thin = THIN_MARK in self.text and json.loads(self.text).get("object") == "v2.core.event"
        return self._thin

    @property
    def event(self) -> StripeEvent:
        if self._event is None:
            with self._lock:
                if self._event is None:
                    self._event = StripeEvent.from_payload(json.loads(self.text))
        return self._event


@dataclass(frozen=True)
class Lease:
    """A claim made before its runs exist or are found: inline mode's request holds its
    event's runs under one from the ingest transaction on (`create_owned`, `adopt`)."""

    owner: str
    token: str
    seconds: float
    # When it was made (time.monotonic()): the lease runs from the ingest commit, a little later.
    made_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process holds the lease of, with what executing it needs."""

    id: int
    event_id: int
    plugin: str
    handler: str
    attempts: int
    attempt_base: int
    lease_token: str
    reclaimed: bool
    replayed: bool
    tenant: str
    stripe_event_id: str
    # The stored event's `type` column: known without parsing the payload (thin events too).
    event_type: str
    payload: EventPayload = field(repr=False)
    # When this process claimed it (time.monotonic()): a run may wait in the worker's queue.
    claimed_at: float = field(default_factory=time.monotonic)

    @property
    def failures(self) -> int:
        """Attempts counted against the retry budget, this one included."""
        return self.attempts - self.attempt_base


# What one failed attempt may write: an error's message and traceback are cut to these many
# characters (the middle goes), and a run keeps the `payhook_run_failure` rows of its first
# failure and its latest ones, this many in all. A failure storm (a broken plugin, runs
# replayed again and again) thus writes a bounded amount per attempt and keeps a bounded
# amount per run, and operators still read how it began and how it goes on.
MESSAGE_LIMIT = 4_000
TRACEBACK_LIMIT = 20_000
FAILURE_ROWS_PER_RUN = 10


@dataclass(frozen=True)
class Failure:
    """One failed attempt, as stored in `payhook_run_failure` and on the run.

    Its texts are made storable on both stores when it is made (see `storable`), and cut to
    `MESSAGE_LIMIT` and `TRACEBACK_LIMIT` characters (see `bounded`).
    """

    error_type: str
    message: str
    traceback: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", bounded(storable(self.message), MESSAGE_LIMIT, head=0.5))
        # A traceback's end says what was raised, and where: most of what is kept.
        object.__setattr__(self, "traceback", bounded(storable(self.traceback), TRACEBACK_LIMIT, head=0.25))
        # The column holds 255 characters (PostgreSQL refuses more).
        object.__setattr__(self, "error_type", storable(self.error_type)[:255])


def bounded(text: str, limit: int, *, head: float) -> str:
    """`text` if it has at most `limit` characters; else its first and last characters
    (`head` of them from the start), with how many were left out between: at most `limit`."""
    if len(text) <= limit:
        return text
    # The count left out is less than len(text): its marker is no longer than this one.
    kept = limit - len(_left_out(len(text)))
    start = int(kept * head)
    return text[:start] + _left_out(len(text) - kept) + text[len(text) - (kept - start) :]


def _left_out(count: int) -> str:
    return f"\n[... {count:,} more characters ...]\n"


def storable(text: str) -> str:
    """`text` as both stores can keep it: NUL (which PostgreSQL's text refuses) written as
    `\\x00`, and a lone surrogate (which is no UTF-8 at all) as its `\\udcxx` escape.

    An error's message may hold anything a handler read: a card holder's name, binary junk.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def status_in(statuses: Iterable[str]) -> ColumnElement[bool]:
    """`status IN (...)` for a compiled statement: one plain parameter per status."""
    return or_(*(RUN.c.status == status for status in statuses))


def _guard(transition: str) -> ColumnElement[bool]:
    # Every write about a claimed run checks the claim still holds: a worker that lost
    # its lease must not overwrite what the run's new owner did.
    return and_(
        RUN.c.id == bindparam("b_id"),
        RUN.c.lease_token == bindparam("b_token"),
        status_in(_sources(transition)),
    )


def _time(name: str) -> Any:
    return bindparam(name, type_=UTCDateTime())


class Runs:
    """The run transitions, compiled once for one database.

    Transitions that belong to a bigger transaction (ingest's `create`, a handler's
    `succeed`) take that transaction's DBAPI cursor; the others open their own through
    `store.transaction()`, or on PostgreSQL, when one statement does the whole transition,
    run it in autocommit mode (`store.statements()`): one round trip, no BEGIN or COMMIT to
    wait for, and the statement is atomic by itself.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        dialect = store.engine.dialect
        self.is_sqlite: bool = store.is_sqlite

        def compile_(statement: Any, keys: list[str] | None = None) -> Compiled:
            return Compiled(statement, dialect, keys)

        self._create = compile_(RUN.insert(), insert_keys(RUN))
        expired = and_(RUN.c.status == S.RUNNING.value, RUN.c.lease_expires_at < _time("b_now"))
        # One branch per status, each an index range scan of (status, next_attempt_at): an
        # OR across statuses would read every waiting run on each claim.
        self._claim_due = self._claim_statements(
            compile_,
            [
                *(and_(RUN.c.status == status, RUN.c.next_attempt_at <= _time("b_now")) for status in DUE),
                expired,
            ],
        )
        # One event's waiting runs whatever their schedule (inline mode and tests want them now).
        self._claim_event = self._claim_statements(
            compile_,
            [and_(RUN.c.event_id == bindparam("b_event_id"), or_(status_in(DUE), expired))],
        )
        self._renew = compile_(
            update(RUN).where(_guard("renew_lease")).values(lease_expires_at=_time("b_until"))
        )
        self._extend = compile_(
            update(RUN).where(_guard("extend_lease")).values(lease_expires_at=_time("b_until"))
        )
        finished = {
            "finished_at": _time("b_now"),
            "duration_ms": bindparam("b_duration"),
            "next_attempt_at": None,
            "lease_token": None,
            "lease_expires_at": None,
            "last_error_type": None,
            "last_traceback": None,
        }
        # Earlier attempts' errors stay in payhook_run_failure, not on a run that is done;
        # a skipped run keeps its reason in last_error.
        self._succeed = compile_(
            update(RUN).where(_guard("succeed")).values(status=S.SUCCEEDED.value, last_error=None, **finished)
        )
        # PostgreSQL: many runs' success marks in one statement, each guarded by its own claim.
        self._succeed_many: Compiled | None = None
        if not self.is_sqlite:
            marks = (
                func.unnest(
                    bindparam("b_ids", type_=ARRAY(BigInteger)),
                    bindparam("b_tokens", type_=ARRAY(String)),
                    bindparam("b_durations", type_=ARRAY(Float)),
                )
                .table_valued("id", "token", "duration")
                .render_derived(name="marks")
            )
            self._succeed_many = compile_(
                update(RUN)
                .where(
                    RUN.c.id == marks.c.id,
                    RUN.c.lease_token == marks.c.token,
                    status_in(_sources("succeed")),
                )
                .values(
                    status=S.SUCCEEDED.value,
                    last_error=None,
                    **{**finished, "duration_ms": marks.c.duration},
                )
                .returning(RUN.c.id)
            )
        self._skip = compile_(
            update(RUN)
            .where(_guard("skip"))
            .values(status=S.SKIPPED.value, last_error=bindparam("b_reason"), **finished)
        )
        # The failure an attempt ended with, kept on the run for operators (and in
        # payhook_run_failure, one row per attempt).
        recorded_error: dict[str, Any] = {
            "last_error_type": bindparam("b_error_type"),
            "last_error": bindparam("b_message"),
            "last_traceback": bindparam("b_traceback"),
        }
        self._fail = compile_(
            update(RUN)
            .where(_guard("fail"))
            .values(
                status=bindparam("b_status"),
                next_attempt_at=_time("b_next"),
                finished_at=_time("b_now"),
                duration_ms=bindparam("b_duration"),
                lease_token=None,
                lease_expires_at=None,
                **recorded_error,
            )
        )
        self._note_lost = compile_(update(RUN).where(_guard("note_lost_attempt")).values(**recorded_error))
        # The lost attempt was the last of the budget: dead, and this claim (which starts no
        # attempt) is undone, so `attempts` still counts the attempts made.
        self._note_lost_dead = compile_(
            update(RUN)
            .where(_guard("note_lost_attempt"))
            .values(
                status=S.DEAD.value,
                attempts=RUN.c.attempts - 1,
                next_attempt_at=None,
                finished_at=_time("b_now"),
                duration_ms=None,
                lease_token=None,
                lease_expires_at=None,
                **recorded_error,
            )
        )
        # A failed attempt handed back by a stopping worker: due now, whatever its budget
        # (the next claim's attempt decides whether it dies).
        self._abandon = compile_(
            update(RUN)
            .where(_guard("abandon"))
            .values(
                status=S.FAILED.value,
                next_attempt_at=_time("b_now"),
                finished_at=_time("b_now"),
                duration_ms=None,
                lease_token=None,
                lease_expires_at=None,
                **recorded_error,
            )
        )
        self._record_failure = compile_(FAILURE.insert(), insert_keys(FAILURE))
        # A run's failure rows past FAILURE_ROWS_PER_RUN: all but its first and its latest.
        first_failure = select(func.min(FAILURE.c.id)).where(FAILURE.c.run_id == bindparam("b_run_id"))
        self._prune_failures = compile_(
            delete(FAILURE).where(
                FAILURE.c.run_id == bindparam("b_run_id"),
                FAILURE.c.attempt <= bindparam("b_oldest_dropped"),
                FAILURE.c.id > first_failure.scalar_subquery(),
            )
        )
        # Back as it was before the claim: `failed` if an attempt of its current budget failed
        # already (a re-armed or replayed run starts a new budget), else `pending`.
        self._release = compile_(
            update(RUN)
            .where(_guard("release"))
            .values(
                status=case((RUN.c.attempts - 1 > RUN.c.attempt_base, S.FAILED.value), else_=S.PENDING.value),
                attempts=RUN.c.attempts - 1,
                lease_token=None,
                lease_expires_at=None,
                next_attempt_at=_time("b_now"),
            )
        )
        self._rearm = compile_(
            update(RUN)
            .where(RUN.c.event_id == bindparam("b_event_id"), status_in(_sources("rearm")))
            .values(status=S.PENDING.value, attempt_base=RUN.c.attempts, next_attempt_at=_time("b_now"))
        )
        # A claim by event and lease, in the ingest transaction. On PostgreSQL a row a worker's
        # claim holds locked is waited for, then looked at again: by then it is `running`.
        self._adopt = compile_(
            update(RUN)
            .where(RUN.c.event_id == bindparam("b_event_id"), status_in(_sources("adopt")))
            .values(
                status=S.RUNNING.value,
                attempts=RUN.c.attempts + 1,
                lease_owner=bindparam("b_owner"),
                lease_token=bindparam("b_token"),
                lease_expires_at=_time("b_until"),
                started_at=_time("b_now"),
            )
        )
        self._owned = compile_(
            select(*_RETURNED, *(EVENT.c[name] for name in EVENT_COLUMNS))
            .where(
                RUN.c.event_id == bindparam("b_event_id"),
                RUN.c.lease_token == bindparam("b_token"),
                RUN.c.status == S.RUNNING.value,
                EVENT.c.id == RUN.c.event_id,
            )
            .order_by(RUN.c.id)
        )

    # -- create ------------------------------------------------------------------------

    def create(self, cursor: Any, event_id: int, handlers: Iterable[HandlerName], now: datetime) -> int:
        """Insert a pending run per handler, due now, inside the caller's transaction."""
        return self._insert(cursor, event_id, handlers, now, None)

    def create_owned(
        self, cursor: Any, event_id: int, handlers: Iterable[HandlerName], now: datetime, lease: Lease
    ) -> int:
        """Insert a run per handler already `running` under `lease` (its first attempt), so
        that no worker can claim it before the lease's holder has run it or given it back."""
        return self._insert(cursor, event_id, handlers, now, lease)

    def _insert(
        self, cursor: Any, event_id: int, handlers: Iterable[HandlerName], now: datetime, lease: Lease | None
    ) -> int:
        status, attempts, started = (S.PENDING, 0, None) if lease is None else (S.RUNNING, 1, now)
        owner = token = until = None
        if lease is not None:
            owner, token, until = lease.owner, lease.token, now + timedelta(seconds=lease.seconds)
        rows = [
            self._create.params(
                {
                    "event_id": event_id,
                    "plugin": handler.plugin,
                    "handler": handler.name,
                    "status": status.value,
                    "attempts": attempts,
                    "attempt_base": 0,
                    "next_attempt_at": now,
                    "lease_owner": owner,
                    "lease_token": token,
                    "lease_expires_at": until,
                    "last_error_type": None,
                    "last_error": None,
                    "last_traceback": None,
                    "created_at": now,
                    "started_at": started,
                    "finished_at": None,
                    "duration_ms": None,
                    "replay_count": 0,
                    "replayed_at": None,
                    "replayed_by": None,
                }
            )
            for handler in handlers
        ]
        if rows:
            cursor.executemany(self._create.sql, rows)
        return len(rows)

    def rearm(self, cursor: Any, event_id: int, now: datetime) -> int:
        """A redelivery of an event whose runs are dead: a fresh retry budget, due now."""
        cursor.execute(self._rearm.sql, self._rearm.params({"b_event_id": event_id, "b_now": now}))
        return max(int(cursor.rowcount), 0)

    def adopt(self, cursor: Any, event_id: int, now: datetime, lease: Lease) -> None:
        """A redelivery to an inline tenant: the event's waiting runs (pending, or failed
        whatever their schedule) become `running` under `lease`, each claim an attempt.

        Runs another owner holds are left to it. Nothing is returned (on PostgreSQL it is
        pipelined with the commit); `owned` finds what was taken.
        """
        params = {
            "b_event_id": event_id,
            "b_owner": lease.owner,
            "b_token": lease.token,
            "b_until": now + timedelta(seconds=lease.seconds),
            "b_now": now,
        }
        cursor.execute(self._adopt.sql, self._adopt.params(params))

    def owned(self, event_id: int, lease: Lease) -> list[ClaimedRun]:
        """The event's runs `lease` holds (created or adopted under it), to execute."""
        params = self._owned.params({"b_event_id": event_id, "b_token": lease.token})
        if not self.is_sqlite:
            # One round trip, no BEGIN.
            with self.store.statements() as statements:
                statements.cursor.execute(self._owned.sql, params)
                rows = statements.cursor.fetchall()
        else:
            # A read: no write lock, no transaction (the driver's autocommit).
            with self.store.engine.connect() as conn, cursor_of(conn) as cursor:
                cursor.execute(self._owned.sql, params)
                rows = cursor.fetchall()
        # Not reclaimed: the previous status is not `running`.
        return _claimed_runs([(*row, None) for row in rows], lease.token, lease.made_at)

    # -- claim -------------------------------------------------------------------------

    def _claim_statements(
        self, compile_: Any, branches: list[ColumnElement[bool]]
    ) -> tuple[Compiled, Compiled | None]:
        """The claim as (pick, mark) on SQLite, or (one statement, None) on PostgreSQL.

        Each branch picks up to `b_limit` runs oldest first; of all of them, the oldest
        `b_limit` are claimed.
        """
        lock = not self.is_sqlite
        parts = []
        for index, where in enumerate(branches):
            part = (
                select(RUN.c.id, RUN.c.status, RUN.c.next_attempt_at)
                .where(where)
                .order_by(RUN.c.next_attempt_at, RUN.c.id)
                .limit(bindparam("b_limit"))
            )
            # PostgreSQL: concurrent workers skip each other's rows instead of queueing.
            parts.append(
                part.with_for_update(skip_locked=True).cte(f"due{index}") if lock else part.subquery()
            )
        due = union_all(*(select(part) for part in parts)).subquery("due") if len(parts) > 1 else parts[0]
        pick = (
            select(due.c.id, due.c.status)
            .order_by(due.c.next_attempt_at, due.c.id)
            .limit(bindparam("b_limit"))
        )
        mark = {
            "status": S.RUNNING.value,
            "attempts": RUN.c.attempts + 1,
            "lease_owner": bindparam("b_owner"),
            "lease_token": bindparam("b_token"),
            "lease_expires_at": _time("b_until"),
            "started_at": _time("b_now"),
        }
        returned = _RETURNED
        if self.is_sqlite:
            # One writer holds the lock for both statements; the pick reads the old status.
            # SQLite's RETURNING cannot name another table, but a scalar subquery may.
            marked = (
                update(RUN)
                .where(RUN.c.id.in_(select(pick.subquery().c.id)))
                .values(**mark)
                .returning(*returned, *(_event_column(name) for name in EVENT_COLUMNS))
            )
            return compile_(pick), compile_(marked)
        # PostgreSQL: one round trip.
        picked = pick.cte("picked")
        statement = (
            update(RUN)
            .where(RUN.c.id == picked.c.id, EVENT.c.id == RUN.c.event_id)
            .values(**mark)
            .returning(*returned, *(EVENT.c[name] for name in EVENT_COLUMNS), picked.c.status)
        )
        return compile_(statement), None

    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, event_id: int | None = None
    ) -> list[ClaimedRun]:
        """Take up to `limit` due runs under a new lease; each claim counts as an attempt."""
        now = utcnow()
        token = uuid.uuid4().hex
        params: dict[str, Any] = {
            "b_token": token,
            "b_now": now,
            "b_until": now + timedelta(seconds=lease_seconds),
            "b_owner": owner,
            "b_limit": limit,
        }
        if event_id is not None:
            params["b_event_id"] = event_id
        pick, mark = self._claim_due if event_id is None else self._claim_event
        if mark is None:
            rows = self._claim_without_flush(pick, params)
        else:
            with self._transaction_cursor() as cursor:
                cursor.execute(pick.sql, pick.params(params))
                rows = cursor.fetchall()
                if rows:
                    was = dict(rows)
                    cursor.execute(mark.sql, mark.params(params))
                    rows = [(*row, was[row[0]]) for row in cursor.fetchall()]
        return _claimed_runs(rows, token, time.monotonic())

    def _claim_without_flush(self, claim: Compiled, params: dict[str, Any]) -> list[Any]:
        """PostgreSQL: the claim (one statement) in a transaction that commits without
        waiting for its WAL to reach the disk, all sent in one round trip.

        Losing such a claim takes a crash of the database server before the WAL writer
        flushed it (well under a second), and leaves the run as it was before the claim: due,
        so it is claimed and run again, the at-least-once any crash gives. Nothing written
        about the run afterwards can outlive it: the success mark, a failure, a handler's
        writes all commit with `synchronous_commit` on, which flushes the WAL up to their own
        commit record, after the claim's. The claimer, which every run waits for, does not
        wait for an fsync.
        """
        with ExitStack() as closing_cursor:
            with self.store.pipelined_transaction() as txn:
                txn.cursor.execute(CLAIM_COMMIT, prepare=False)
                cursor = closing_cursor.enter_context(closing(txn.cursor.connection.cursor()))
                cursor.execute(claim.sql, claim.params(params))
            # The pipeline's COMMIT went out with the claim; its rows arrived with the sync.
            return list(cursor.fetchall())

    # -- while running -----------------------------------------------------------------

    def renew_lease(self, run: ClaimedRun, seconds: float) -> bool:
        """A fresh lease for a run that waited in a queue, if the claim still holds."""
        until = utcnow() + timedelta(seconds=seconds)
        return self._write_one(self._renew, {"b_id": run.id, "b_token": run.lease_token, "b_until": until})

    def extend_lease(self, run_id: int, token: str, seconds: float) -> bool:
        """A handler asks for more time; False if its lease was already lost."""
        until = utcnow() + timedelta(seconds=seconds)
        return self._write_one(self._extend, {"b_id": run_id, "b_token": token, "b_until": until})

    # -- finishing ---------------------------------------------------------------------

    def succeed(self, cursor: Any, run: ClaimedRun, duration_ms: float, now: datetime | None = None) -> bool:
        """Inside the handler's transaction: mark it succeeded; False if the lease was lost."""
        cursor.execute(
            self._succeed.sql,
            self._succeed.params(
                {
                    "b_id": run.id,
                    "b_token": run.lease_token,
                    "b_now": now or utcnow(),
                    "b_duration": duration_ms,
                }
            ),
        )
        return bool(cursor.rowcount == 1)

    def succeed_alone(self, run: ClaimedRun, duration_ms: float) -> bool:
        """`succeed` committed on its own (the handler wrote nothing)."""
        return self._write_one(
            self._succeed,
            {"b_id": run.id, "b_token": run.lease_token, "b_now": utcnow(), "b_duration": duration_ms},
        )

    def succeed_many(self, finished: Sequence[tuple[ClaimedRun, float]]) -> set[int]:
        """`succeed` for many runs whose handlers wrote nothing, in one commit.

        `finished` holds (run, duration in ms) pairs. Returns the ids of the runs marked:
        the others' claims no longer held (another worker took them over) and they are left
        as their new owner has them. Committed (durably) when this returns.
        """
        if not finished:
            return set()
        now = utcnow()
        if self._succeed_many is None:
            # SQLite: one transaction, one turn of the write lock, for all of them.
            with self._transaction_cursor() as cursor:
                return {run.id for run, ms in finished if self.succeed(cursor, run, ms, now)}
        params = {
            "b_ids": [run.id for run, _ in finished],
            "b_tokens": [run.lease_token for run, _ in finished],
            "b_durations": [ms for _, ms in finished],
            "b_now": now,
        }
        with self.store.statements() as statements:
            statements.cursor.execute(self._succeed_many.sql, self._succeed_many.params(params))
            return {row[0] for row in statements.cursor.fetchall()}

    def skip(self, run: ClaimedRun, reason: str, duration_ms: float) -> bool:
        """The handler raised payhook.Skip: `skipped`, with its reason."""
        return self._write_one(
            self._skip,
            {
                "b_id": run.id,
                "b_token": run.lease_token,
                "b_now": utcnow(),
                "b_duration": duration_ms,
                "b_reason": storable(reason),
            },
        )

    def fail(
        self,
        run: ClaimedRun,
        failure: Failure,
        *,
        next_attempt_at: datetime | None,
        duration_ms: float | None = None,
    ) -> bool:
        """Record a failed attempt: `failed` with the next attempt's time, or `dead` without."""
        status = S.FAILED if next_attempt_at is not None else S.DEAD
        now = utcnow()
        params = {
            "b_id": run.id,
            "b_token": run.lease_token,
            "b_status": status.value,
            "b_next": next_attempt_at,
            "b_now": now,
            "b_duration": duration_ms,
            **_failure_params(failure),
        }
        with self._transaction_cursor() as cursor:
            return self._record(cursor, self._fail, params, run.id, run.attempts, failure, now)

    def note_lost_attempt(self, run: ClaimedRun, failure: Failure, *, dead: bool) -> bool:
        """A reclaimed run: its previous holder's attempt is recorded as failed, under that
        attempt's number (`attempts - 1`: this claim already counted the next one).

        The run stays `running` for this claim, unless the lost attempt was the last of its
        budget (`dead`): then it is dead, and this claim's attempt, which never started, is
        undone, so `attempts` is again the lost attempt's number.
        """
        now = utcnow()
        params = {"b_id": run.id, "b_token": run.lease_token, "b_now": now, **_failure_params(failure)}
        statement = self._note_lost_dead if dead else self._note_lost
        with self._transaction_cursor() as cursor:
            return self._record(cursor, statement, params, run.id, run.attempts - 1, failure, now)

    def abandon(self, runs: Sequence[ClaimedRun], failure: Failure) -> int:
        """Hand back runs this worker cannot finish (shutdown): each attempt failed, the runs
        due now for another worker, in one transaction. Returns how many were handed back."""
        now = utcnow()
        with self._transaction_cursor() as cursor:
            return sum(
                self._record(
                    cursor,
                    self._abandon,
                    {"b_id": run.id, "b_token": run.lease_token, "b_now": now, **_failure_params(failure)},
                    run.id,
                    run.attempts,
                    failure,
                    now,
                )
                for run in runs
            )

    def release(self, runs: Sequence[ClaimedRun]) -> None:
        """Give back claimed runs that never started; the attempt is undone."""
        if not runs:
            return
        now = utcnow()
        with self._transaction_cursor() as cursor:
            for run in runs:
                params = {"b_id": run.id, "b_token": run.lease_token, "b_now": now}
                cursor.execute(self._release.sql, self._release.params(params))

    # -- operator transitions (Core connection, rarely hot) ----------------------------

    def replay(
        self,
        conn: Any,
        run_ids: Sequence[int],
        *,
        statuses: Sequence[str],
        requested_by: str,
        now: datetime,
    ) -> None:
        """Make the given runs due now with a fresh budget, recording who asked."""
        allowed = set(_sources("replay"))
        if not set(statuses) <= allowed:
            raise IllegalTransition(f"replay starts from {sorted(allowed)}, not {sorted(statuses)}")
        for chunk in _chunks(run_ids, 500):
            conn.execute(
                update(RUN)
                .where(RUN.c.id.in_(chunk), RUN.c.status.in_(list(statuses)))
                .values(
                    status=S.PENDING.value,
                    attempt_base=RUN.c.attempts,
                    next_attempt_at=now,
                    replay_count=RUN.c.replay_count + 1,
                    replayed_at=now,
                    replayed_by=requested_by,
                )
            )

    def retry_now(self, conn: Any) -> int:
        """Make every failed run due now instead of after its backoff (tests, operators)."""
        result = conn.execute(
            update(RUN).where(RUN.c.status == S.FAILED.value).values(next_attempt_at=utcnow())
        )
        return int(result.rowcount)

    def create_on(self, conn: Any, event_id: int, handlers: Iterable[HandlerName], now: datetime) -> int:
        """`create` on a SQLAlchemy connection (replay, reconcile)."""
        with cursor_of(conn) as cursor:
            return self.create(cursor, event_id, handlers, now)

    def delete_for_events(self, conn: Any, event_ids: Sequence[int]) -> int:
        """Drop finished events' runs and their failures (retention)."""
        run_ids = select(RUN.c.id).where(RUN.c.event_id.in_(event_ids)).scalar_subquery()
        conn.execute(delete(FAILURE).where(FAILURE.c.run_id.in_(run_ids)))
        return int(conn.execute(delete(RUN).where(RUN.c.event_id.in_(event_ids))).rowcount)

    @staticmethod
    def unfinished_exists() -> ColumnElement[bool]:
        """True for an event that still has a run to execute (pending, running or failed)."""
        return exists().where(RUN.c.event_id == EVENT.c.id, RUN.c.status.not_in(FINISHED))

    # -- helpers -----------------------------------------------------------------------

    def _transaction(self) -> Any:
        # The worker's bookkeeping: a commit lost to a power failure is redone from the
        # durable event (see sqlite.py), so it need not wait for an fsync.
        return self.store.transaction(durable=False)

    @contextmanager
    def _transaction_cursor(self) -> Iterator[Any]:
        """A DBAPI cursor in a transaction of its own, committed when the block ends."""
        with self._transaction() as conn, cursor_of(conn) as cursor:
            yield cursor

    def _write_one(self, statement: Compiled, params: dict[str, Any]) -> bool:
        """One statement about one run; True if it changed that run."""
        if not self.is_sqlite:
            with self.store.statements() as statements:
                statements.cursor.execute(statement.sql, statement.params(params))
                return bool(statements.cursor.rowcount == 1)
        with self._transaction_cursor() as cursor:
            cursor.execute(statement.sql, statement.params(params))
            return bool(cursor.rowcount == 1)

    def _record(
        self,
        cursor: Any,
        statement: Compiled,
        params: dict[str, Any],
        run_id: int,
        attempt: int,
        failure: Failure,
        now: datetime,
    ) -> bool:
        """`statement` about one failed attempt, and if it changed the run (the claim held),
        the attempt's `payhook_run_failure` row."""
        cursor.execute(statement.sql, statement.params(params))
        if cursor.rowcount != 1:
            return False
        cursor.execute(
            self._record_failure.sql,
            self._record_failure.params(
                {
                    "run_id": run_id,
                    "attempt": attempt,
                    "error_type": failure.error_type,
                    "message": failure.message,
                    "traceback": failure.traceback,
                    "failed_at": now,
                }
            ),
        )
        if attempt > FAILURE_ROWS_PER_RUN:
            # Attempt numbers are a run's own, one per row: the latest FAILURE_ROWS_PER_RUN - 1
            # stay, with the first.
            params = {"b_run_id": run_id, "b_oldest_dropped": attempt - FAILURE_ROWS_PER_RUN + 1}
            cursor.execute(self._prune_failures.sql, self._prune_failures.params(params))
        return True


_RUNS_BY_STORE: weakref.WeakKeyDictionary[Any, Runs] = weakref.WeakKeyDictionary()
_RUNS_LOCK = threading.Lock()


def runs_of(store: Any) -> Runs:
    """The one `Runs` of a store (its statements are compiled once)."""
    with _RUNS_LOCK:
        runs = _RUNS_BY_STORE.get(store)
        if runs is None:
            runs = _RUNS_BY_STORE[store] = Runs(store)
        return runs


def newer_event_applied(session: Any, event_id: int, plugin: str) -> bool:
    """Did `plugin` already succeed on an event created later about the same object?"""
    this = EVENT.alias("this")
    other = EVENT.alias("other")
    query = select(
        exists().where(
            this.c.id == event_id,
            other.c.tenant == this.c.tenant,
            other.c.object_id == this.c.object_id,
            other.c.created > this.c.created,
            RUN.c.event_id == other.c.id,
            RUN.c.plugin == plugin,
            RUN.c.status == S.SUCCEEDED.value,
        )
    )
    return bool(session.execute(query).scalar())


def cursor_of(conn: Any) -> AbstractContextManager[Any]:
    """The DBAPI cursor of a SQLAlchemy connection, closed when the block ends."""
    return closing(conn.connection.cursor())


def _claimed_runs(rows: Iterable[Any], token: str, claimed_at: float) -> list[ClaimedRun]:
    """Rows of `_RETURNED`, the `EVENT_COLUMNS` and the run's status before the claim."""
    payloads: dict[int, EventPayload] = {}
    claimed = []
    for row in sorted(rows, key=lambda r: r[0]):
        run_id, event_id, plugin, handler, attempts, base, replays, tenant, evt, type_, text, was = row
        payload = payloads.get(event_id)
        if payload is None:
            payload = payloads[event_id] = EventPayload(text)
        claimed.append(
            ClaimedRun(
                id=run_id,
                event_id=event_id,
                plugin=plugin,
                handler=handler,
                attempts=attempts,
                attempt_base=base,
                lease_token=token,
                reclaimed=was == S.RUNNING.value,
                replayed=bool(replays),
                tenant=tenant,
                stripe_event_id=evt,
                event_type=type_,
                payload=payload,
                claimed_at=claimed_at,
            )
        )
    return claimed


def _failure_params(failure: Failure) -> dict[str, Any]:
    return {
        "b_error_type": failure.error_type,
        "b_message": failure.message,
        "b_traceback": failure.traceback,
    }


def _event_column(name: str) -> Any:
    return select(EVENT.c[name]).where(EVENT.c.id == RUN.c.event_id).scalar_subquery()


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
