"""What `payhook failures` and the status page read about failed and dead runs: groups of
runs that failed alike, and the runs themselves for the replay buttons.

Read-only queries; each opens a plain connection (no write transaction, so on SQLite it
never waits for the write lock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select

from payhook.store.engine import Store
from payhook.store.models import RunStatus
from payhook.store.runs import EVENT, RUN

__all__ = [
    "PROBLEM_STATUSES",
    "FailureGroup",
    "ProblemRun",
    "error_pattern",
    "failure_groups",
    "problem_runs",
]

S = RunStatus

# What differs between messages of one failure: Stripe ids (`pi_3PxyzAbc...` -> `pi_…`, the
# id part mixed letters and digits), UUIDs, and runs of digits (`order 4242` -> `order N`).
STRIPE_ID = re.compile(r"\b([a-z]+(?:_[a-z]+)*)_(?=[A-Za-z]*[0-9])[A-Za-z0-9]{6,}\b")
UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
DIGITS = re.compile(r"\d+")


def error_pattern(message: str) -> str:
    """`message` with ids and numbers masked: what failures of one kind have in common."""
    masked = STRIPE_ID.sub(lambda match: f"{match[1]}_…", message)
    return DIGITS.sub("N", UUID.sub("…", masked))


@dataclass(frozen=True)
class FailureGroup:
    """Failed and dead runs of one tenant's plugin that ended with the same kind of error:
    the same type, and messages alike once ids and numbers are masked (`error_pattern`)."""

    tenant: str
    plugin: str
    error_type: str
    # The masked message the group's runs share, and one of their messages as it was.
    error: str
    example_error: str
    failed: int
    dead: int
    last_failed_at: datetime | None
    example_event: str

    @property
    def runs(self) -> int:
        return self.failed + self.dead

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "plugin": self.plugin,
            "error_type": self.error_type,
            "error": self.error,
            "example_error": self.example_error,
            "failed": self.failed,
            "dead": self.dead,
            "runs": self.runs,
            "last_failed_at": _iso(self.last_failed_at),
            "example_event": self.example_event,
        }


PROBLEM_STATUSES = (S.FAILED.value, S.DEAD.value)


def failure_groups(
    store: Store, tenant: str | None = None, since: datetime | None = None
) -> list[FailureGroup]:
    """Failed and dead runs grouped by tenant, plugin, error type and error pattern; most
    runs first. The example event and message are those of the group's least event id."""
    error_type = func.coalesce(RUN.c.last_error_type, literal(""))
    error = func.coalesce(RUN.c.last_error, literal(""))
    query = (
        select(
            EVENT.c.tenant,
            RUN.c.plugin,
            error_type.label("error_type"),
            error.label("error"),
            RUN.c.status,
            func.count().label("runs"),
            func.max(RUN.c.finished_at).label("last_failed_at"),
            func.min(EVENT.c.stripe_event_id).label("example_event"),
        )
        .join(EVENT, EVENT.c.id == RUN.c.event_id)
        .where(RUN.c.status.in_(PROBLEM_STATUSES))
        .group_by(EVENT.c.tenant, RUN.c.plugin, error_type, error, RUN.c.status)
    )
    if tenant is not None:
        query = query.where(EVENT.c.tenant == tenant)
    if since is not None:
        query = query.where(RUN.c.finished_at >= since)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    # Exact messages are grouped by the database; their patterns here, where the masking is.
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row.tenant, row.plugin, row.error_type, error_pattern(row.error))
        group = merged.setdefault(
            key,
            {"failed": 0, "dead": 0, "last": None, "example": row.example_event, "message": row.error},
        )
        group["dead" if row.status == S.DEAD.value else "failed"] += int(row.runs)
        if row.last_failed_at is not None and (group["last"] is None or row.last_failed_at > group["last"]):
            group["last"] = row.last_failed_at
        if (row.example_event, row.error) < (group["example"], group["message"]):
            group["example"], group["message"] = row.example_event, row.error
    groups = [
        FailureGroup(
            tenant_,
            plugin,
            error_type_,
            pattern,
            g["message"],
            g["failed"],
            g["dead"],
            g["last"],
            g["example"],
        )
        for (tenant_, plugin, error_type_, pattern), g in merged.items()
    ]
    return sorted(groups, key=lambda g: (-g.runs, g.tenant, g.plugin, g.error_type, g.error))


@dataclass(frozen=True)
class ProblemRun:
    """A failed or dead run, for the status page's list with its replay button."""

    id: int
    tenant: str
    stripe_event_id: str
    type: str
    plugin: str
    handler: str
    status: str
    attempts: int
    error_type: str | None
    error: str | None
    finished_at: datetime | None
    next_attempt_at: datetime | None


def problem_runs(store: Store, tenant: str | None = None, limit: int = 50) -> list[ProblemRun]:
    """Failed and dead runs, the most recently failed first."""
    query = (
        select(
            RUN.c.id,
            EVENT.c.tenant,
            EVENT.c.stripe_event_id,
            EVENT.c.type,
            RUN.c.plugin,
            RUN.c.handler,
            RUN.c.status,
            RUN.c.attempts,
            RUN.c.last_error_type.label("error_type"),
            RUN.c.last_error.label("error"),
            RUN.c.finished_at,
            RUN.c.next_attempt_at,
        )
        .join(EVENT, EVENT.c.id == RUN.c.event_id)
        .where(RUN.c.status.in_(PROBLEM_STATUSES))
        .order_by(RUN.c.finished_at.desc(), RUN.c.id.desc())
        .limit(limit)
    )
    if tenant is not None:
        query = query.where(EVENT.c.tenant == tenant)
    with store.engine.connect() as conn:
        return [ProblemRun(**row._asdict()) for row in conn.execute(query)]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
