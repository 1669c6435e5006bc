"""The core's tables: events, handler runs and their failures."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint, false
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = ["Event", "HandlerRun", "RunFailure", "RunStatus", "UTCDateTime", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no timezone type)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # Naive on SQLite so stored strings sort and compare chronologically.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the last attempt failed; another is scheduled
    DEAD = "dead"  # out of attempts, or given up; a redelivery re-arms it
    SKIPPED = "skipped"  # the handler decided the event needs nothing from it (payhook.Skip)


def _time(nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=nullable, index=index),
    )


class Event(SQLModel, table=True):
    __tablename__ = "payhook_event"
    __table_args__ = (
        UniqueConstraint("tenant", "stripe_event_id", name="uq_payhook_event_tenant_event"),
        Index("ix_payhook_event_tenant_object", "tenant", "object_id"),
        Index("ix_payhook_event_tenant_created", "tenant", "created"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64)
    stripe_event_id: str = Field(max_length=255)
    type: str = Field(max_length=255, index=True)
    livemode: bool = False
    api_version: str | None = Field(default=None, max_length=64)
    account: str | None = Field(default=None, max_length=255)
    object_id: str | None = Field(default=None, max_length=255)
    created: datetime | None = _time(nullable=True)
    received_at: datetime = _time(index=True)
    # The exact body text Stripe signed; "" once pruned (the row stays as the dedupe ledger).
    payload: str = Field(sa_column=Column(Text, nullable=False))
    secret_index: int = 0
    pruned_at: datetime | None = _time(nullable=True)
    # How the event came in: "webhook" (delivered by Stripe) or "reconcile" (listed from
    # the API by `payhook reconcile` after its delivery was missed).
    source: str = Field(default="webhook", max_length=16, sa_column_kwargs={"server_default": "webhook"})
    # Set when the event was stored without runs by a tenant's guard (its `livemode`).
    ignored_reason: str | None = Field(default=None, max_length=255)
    # The event's api_version is not the one the tenant's config expects.
    api_version_mismatch: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class HandlerRun(SQLModel, table=True):
    __tablename__ = "payhook_handler_run"
    __table_args__ = (
        UniqueConstraint("event_id", "plugin", "handler", name="uq_payhook_handler_run_handler"),
        Index("ix_payhook_handler_run_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="payhook_event.id", index=True)
    plugin: str = Field(max_length=100)
    handler: str = Field(max_length=255)
    status: str = Field(default=RunStatus.PENDING, max_length=16)
    attempts: int = 0
    # Attempts made before the last re-arm; the retry budget counts from here.
    attempt_base: int = 0
    next_attempt_at: datetime | None = _time(nullable=True)
    lease_owner: str | None = Field(default=None, max_length=255)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _time(nullable=True)
    last_error_type: str | None = Field(default=None, max_length=255)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_traceback: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _time()
    started_at: datetime | None = _time(nullable=True)
    finished_at: datetime | None = _time(nullable=True)
    duration_ms: float | None = None
    # Set by payhook.replay: who re-ran this run, when, and how often.
    replay_count: int = 0
    replayed_at: datetime | None = _time(nullable=True)
    replayed_by: str | None = Field(default=None, max_length=255)


class RunFailure(SQLModel, table=True):
    __tablename__ = "payhook_run_failure"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="payhook_handler_run.id", index=True)
    attempt: int
    error_type: str = Field(max_length=255)
    message: str = Field(sa_column=Column(Text, nullable=False))
    traceback: str = Field(sa_column=Column(Text, nullable=False))
    failed_at: datetime = _time()
