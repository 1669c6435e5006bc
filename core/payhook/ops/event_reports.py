"""What `payhook events` and the status page read about events: a list with each event's
overall status, and one event in full with its runs and their failures.

Read-only queries; each opens a plain connection (no write transaction, so on SQLite it
never waits for the write lock).

An event's overall status comes from its runs, the most urgent first::

    dead > failed > running > pending > succeeded > skipped

so an event is `succeeded` when every run finished and at least one succeeded, `skipped`
when every run was skipped, `ignored` when it has no runs (no enabled plugin handles its
type), and `pruned` once retention dropped its payload and runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.sql import ColumnElement

from payhook.store.engine import Store
from payhook.store.models import RunStatus
from payhook.store.runs import EVENT, FAILURE, RUN

__all__ = [
    "EVENT_STATUSES",
    "EventDetail",
    "EventFilter",
    "EventSummary",
    "FailureDetail",
    "RunDetail",
    "RunState",
    "find_events",
    "list_events",
    "run_state",
]

S = RunStatus
# The rule in the module docstring, as ranks: the highest rank among an event's runs wins.
STATUS_RANK = {S.SKIPPED: 1, S.SUCCEEDED: 2, S.PENDING: 3, S.RUNNING: 4, S.FAILED: 5, S.DEAD: 6}
RANK_STATUS = {rank: status.value for status, rank in STATUS_RANK.items()}
IGNORED = "ignored"
PRUNED = "pruned"
# Every status `events list --status` takes, the most urgent first.
EVENT_STATUSES = (*(RANK_STATUS[rank] for rank in sorted(RANK_STATUS, reverse=True)), IGNORED, PRUNED)


def _rank() -> ColumnElement[Any]:
    return case(*((RUN.c.status == status.value, rank) for status, rank in STATUS_RANK.items()), else_=0)


def _status_rank() -> Any:
    return select(func.max(_rank())).where(RUN.c.event_id == EVENT.c.id).scalar_subquery()


def _run_count() -> Any:
    return select(func.count()).where(RUN.c.event_id == EVENT.c.id).scalar_subquery()


def _overall(rank: int | None, pruned: bool) -> str:
    if pruned:
        return PRUNED
    return RANK_STATUS.get(rank or 0, IGNORED)


@dataclass(frozen=True)
class EventSummary:
    id: int
    stripe_event_id: str
    tenant: str
    type: str
    livemode: bool
    received_at: datetime
    status: str
    runs: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.stripe_event_id,
            "tenant": self.tenant,
            "type": self.type,
            "received_at": self.received_at.isoformat(),
            "status": self.status,
            "livemode": self.livemode,
            "runs": self.runs,
        }


@dataclass(frozen=True)
class EventFilter:
    """Which events to list. Every given field must match."""

    tenant: str | None = None
    type: str | None = None
    status: str | None = None
    since: datetime | None = None
    limit: int = 50


def list_events(store: Store, selection: EventFilter) -> list[EventSummary]:
    """Matching events, newest first."""
    rank = _status_rank()
    query = select(
        EVENT.c.id,
        EVENT.c.stripe_event_id,
        EVENT.c.tenant,
        EVENT.c.type,
        EVENT.c.livemode,
        EVENT.c.received_at,
        EVENT.c.pruned_at,
        rank.label("rank"),
        _run_count().label("runs"),
    )
    if selection.tenant is not None:
        query = query.where(EVENT.c.tenant == selection.tenant)
    if selection.type is not None:
        query = query.where(EVENT.c.type == selection.type)
    if selection.since is not None:
        query = query.where(EVENT.c.received_at >= selection.since)
    if selection.status == PRUNED:
        query = query.where(EVENT.c.pruned_at.is_not(None))
    elif selection.status == IGNORED:
        query = query.where(EVENT.c.pruned_at.is_(None), rank.is_(None))
    elif selection.status is not None:
        wanted = STATUS_RANK[RunStatus(selection.status)]
        query = query.where(EVENT.c.pruned_at.is_(None), rank == wanted)
    query = query.order_by(EVENT.c.received_at.desc(), EVENT.c.id.desc()).limit(selection.limit)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        EventSummary(
            id=row.id,
            stripe_event_id=row.stripe_event_id,
            tenant=row.tenant,
            type=row.type,
            livemode=bool(row.livemode),
            received_at=row.received_at,
            status=_overall(row.rank, row.pruned_at is not None),
            runs=int(row.runs),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class FailureDetail:
    attempt: int
    error_type: str
    message: str
    traceback: str
    failed_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "error_type": self.error_type,
            "message": self.message,
            "traceback": self.traceback,
            "failed_at": self.failed_at.isoformat(),
        }


@dataclass(frozen=True)
class RunDetail:
    id: int
    plugin: str
    handler: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error_type: str | None
    last_error: str | None
    last_traceback: str | None
    finished_at: datetime | None
    duration_ms: float | None
    replay_count: int
    replayed_by: str | None
    failures: list[FailureDetail] = field(default_factory=list)

    @property
    def replayable(self) -> bool:
        return self.status in (S.FAILED.value, S.DEAD.value)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "plugin": self.plugin,
            "handler": self.handler,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "last_error_type": self.last_error_type,
            "last_error": self.last_error,
            "last_traceback": self.last_traceback,
            "finished_at": _iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "replay_count": self.replay_count,
            "replayed_by": self.replayed_by,
            "failures": [failure.as_json() for failure in self.failures],
        }


@dataclass(frozen=True)
class EventDetail:
    summary: EventSummary
    api_version: str | None
    account: str | None
    object_id: str | None
    created: datetime | None
    payload: str
    secret_index: int
    pruned_at: datetime | None
    runs: list[RunDetail]
    # "webhook", "thin" (POST /<tenant>/thin) or "reconcile" (listed by payhook reconcile).
    source: str = "webhook"
    ignored_reason: str | None = None
    api_version_mismatch: bool = False

    @property
    def signed_with(self) -> str:
        """How the event was authenticated, for people."""
        if self.source == "reconcile":
            return "no signature: listed from the API by payhook reconcile"
        secrets = "thin_webhook_secrets" if self.source == "thin" else "webhook_secrets"
        return f"#{self.secret_index} of the tenant's {secrets}"

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(),
            "api_version": self.api_version,
            "account": self.account,
            "object_id": self.object_id,
            "created": _iso(self.created),
            "secret_index": self.secret_index,
            "pruned_at": _iso(self.pruned_at),
            "source": self.source,
            "ignored_reason": self.ignored_reason,
            "api_version_mismatch": self.api_version_mismatch,
            "payload": json.loads(self.payload) if self.payload else None,
            "runs": [run.as_json() for run in self.runs],
        }


def find_events(store: Store, stripe_event_id: str, tenant: str | None = None) -> list[EventDetail]:
    """The stored event(s) with this Stripe id (one per tenant that received it), in full."""
    query = select(EVENT).where(EVENT.c.stripe_event_id == stripe_event_id)
    if tenant is not None:
        query = query.where(EVENT.c.tenant == tenant)
    with store.engine.connect() as conn:
        events = conn.execute(query.order_by(EVENT.c.tenant)).all()
        return [_detail(conn, event) for event in events]


def _detail(conn: Connection, event: Any) -> EventDetail:
    run_rows = conn.execute(select(RUN).where(RUN.c.event_id == event.id).order_by(RUN.c.id)).all()
    failures: dict[int, list[FailureDetail]] = {row.id: [] for row in run_rows}
    if run_rows:
        failure_rows = conn.execute(
            select(FAILURE)
            .where(FAILURE.c.run_id.in_(list(failures)))
            .order_by(FAILURE.c.run_id, FAILURE.c.attempt, FAILURE.c.id)
        )
        for row in failure_rows:
            failures[row.run_id].append(
                FailureDetail(row.attempt, row.error_type, row.message, row.traceback, row.failed_at)
            )
    runs = [
        RunDetail(
            id=row.id,
            plugin=row.plugin,
            handler=row.handler,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error_type=row.last_error_type,
            last_error=row.last_error,
            last_traceback=row.last_traceback,
            finished_at=row.finished_at,
            duration_ms=row.duration_ms,
            replay_count=row.replay_count,
            replayed_by=row.replayed_by,
            failures=failures[row.id],
        )
        for row in run_rows
    ]
    ranks = [STATUS_RANK[RunStatus(run.status)] for run in runs if run.status in STATUS_RANK]
    summary = EventSummary(
        id=event.id,
        stripe_event_id=event.stripe_event_id,
        tenant=event.tenant,
        type=event.type,
        livemode=bool(event.livemode),
        received_at=event.received_at,
        status=_overall(max(ranks, default=None), event.pruned_at is not None),
        runs=len(runs),
    )
    return EventDetail(
        summary=summary,
        api_version=event.api_version,
        account=event.account,
        object_id=event.object_id,
        created=event.created,
        payload=event.payload,
        secret_index=event.secret_index,
        pruned_at=event.pruned_at,
        runs=runs,
        source=event.source,
        ignored_reason=event.ignored_reason,
        api_version_mismatch=bool(event.api_version_mismatch),
    )


@dataclass(frozen=True)
class RunState:
    """Where one run stands now: after a replay, what became of it."""

    id: int
    status: str
    error_type: str | None
    error: str | None
    next_attempt_at: datetime | None

    @property
    def settled(self) -> bool:
        """Not waiting for an attempt nor in one."""
        return self.status not in (S.PENDING.value, S.RUNNING.value)


def run_state(store: Store, run_id: int) -> RunState | None:
    """The run's status and last error, or None when there is no such run."""
    query = select(
        RUN.c.id,
        RUN.c.status,
        RUN.c.last_error_type.label("error_type"),
        RUN.c.last_error.label("error"),
        RUN.c.next_attempt_at,
    ).where(RUN.c.id == run_id)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    return RunState(**row._asdict()) if row is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
