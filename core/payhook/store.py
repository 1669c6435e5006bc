"""The database: engine setup, transactions, and the handler-run queue."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, create_engine, exists, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from .config import DatabaseConfig
from .models import Event, HandlerRun, RunFailure, RunStatus, utcnow
from .sqlite import Checkpointer, make_sqlite_engine

__all__ = ["ClaimedRun", "Store", "StoreUnavailable"]

EVENT = Event.__table__  # type: ignore[attr-defined]
RUN = HandlerRun.__table__  # type: ignore[attr-defined]
FAILURE = RunFailure.__table__  # type: ignore[attr-defined]

# Errors that mean "the database is not there right now", as opposed to a bug in a query.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

# Runs a worker may take: due and waiting, or claimed by a worker whose lease ran out.
DUE_STATUSES = (RunStatus.PENDING.value, RunStatus.FAILED.value)


class StoreUnavailable(Exception):
    """The database could not be reached or did not answer in time."""


@dataclass(frozen=True)
class ClaimedRun:
    id: int
    event_id: int
    plugin: str
    handler: str
    attempts: int
    attempt_base: int
    lease_token: str
    reclaimed: bool
    tenant: str
    stripe_event_id: str
    payload: str
    # When this process claimed it (time.monotonic()): a run may wait in the worker's queue.
    claimed_at: float = field(default_factory=time.monotonic)


class Store:
    """One engine and the statements the core runs on it."""

    def __init__(self, config: DatabaseConfig, *, min_pool_size: int = 0) -> None:
        self.config = config
        self.is_sqlite = config.is_sqlite
        # Every concurrent handler run holds a connection for its transaction.
        self.engine = _make_engine(config, max(config.pool_size, min_pool_size))
        # SQLite has one writer. Queueing in-process writers on a lock wakes them the
        # moment it is free; SQLite's own busy handler sleeps in growing steps instead.
        self._write_lock: threading.Lock | None = threading.Lock() if self.is_sqlite else None
        self._checkpointer: Checkpointer | None = None

    def _locked(self) -> AbstractContextManager[Any]:
        return self._write_lock if self._write_lock is not None else nullcontext()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a committed-on-exit transaction."""
        with self._locked():
            try:
                with self.engine.begin() as conn:
                    yield conn
            except UNAVAILABLE as exc:
                raise StoreUnavailable(_describe(exc)) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session; the caller commits or rolls back."""
        with self._locked(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    def ping(self) -> None:
        with self.transaction() as conn:
            conn.exec_driver_sql("SELECT 1")

    def start_maintenance(self) -> None:
        """Background upkeep while a receiver or worker runs: SQLite's WAL checkpoints."""
        if self.is_sqlite and self._checkpointer is None and self.engine.url.database:
            self._checkpointer = Checkpointer(self.engine.url.database)
            self._checkpointer.start()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()

    # -- the run queue -----------------------------------------------------------------

    def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        event_id: int | None = None,
    ) -> list[ClaimedRun]:
        """Take up to `limit` due runs under a lease; each claim counts as an attempt.

        With `event_id`, take that event's waiting runs whatever their schedule (inline mode
        and redeliveries want them now).
        """
        now = utcnow()
        token = uuid.uuid4().hex
        expired = and_(RUN.c.status == RunStatus.RUNNING.value, RUN.c.lease_expires_at < now)
        if event_id is None:
            due = or_(and_(RUN.c.status.in_(DUE_STATUSES), RUN.c.next_attempt_at <= now), expired)
        else:
            due = and_(RUN.c.event_id == event_id, or_(RUN.c.status.in_(DUE_STATUSES), expired))
        query = (
            select(
                RUN.c.id,
                RUN.c.event_id,
                RUN.c.plugin,
                RUN.c.handler,
                RUN.c.status,
                RUN.c.attempts,
                RUN.c.attempt_base,
                EVENT.c.tenant,
                EVENT.c.stripe_event_id,
                EVENT.c.payload,
            )
            .join(EVENT, EVENT.c.id == RUN.c.event_id)
            .where(due)
            .order_by(RUN.c.next_attempt_at, RUN.c.id)
            .limit(limit)
        )
        if not self.is_sqlite:
            # Concurrent workers skip each other's rows instead of queueing behind them.
            query = query.with_for_update(skip_locked=True, of=RUN)
        with self.transaction() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return []
            conn.execute(
                update(RUN)
                .where(RUN.c.id.in_([row.id for row in rows]))
                .values(
                    status=RunStatus.RUNNING.value,
                    attempts=RUN.c.attempts + 1,
                    lease_owner=owner,
                    lease_token=token,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=now,
                )
            )
        return [
            ClaimedRun(
                id=row.id,
                event_id=row.event_id,
                plugin=row.plugin,
                handler=row.handler,
                attempts=row.attempts + 1,
                attempt_base=row.attempt_base,
                lease_token=token,
                reclaimed=row.status == RunStatus.RUNNING.value,
                tenant=row.tenant,
                stripe_event_id=row.stripe_event_id,
                payload=row.payload,
            )
            for row in rows
        ]

    def mark_succeeded(self, conn: Connection | Session, run: ClaimedRun, duration_ms: float) -> bool:
        """Inside the handler's transaction: True if the lease still held."""
        result = conn.execute(self._finish(run, RunStatus.SUCCEEDED, duration_ms, note=None))
        return bool(getattr(result, "rowcount", 0) == 1)

    def record_skip(self, run: ClaimedRun, reason: str, duration_ms: float) -> bool:
        """Mark a run `skipped` with its reason (the handler raised payhook.Skip)."""
        with self.transaction() as conn:
            result = conn.execute(self._finish(run, RunStatus.SKIPPED, duration_ms, note=reason))
        return bool(result.rowcount == 1)

    def _finish(self, run: ClaimedRun, status: RunStatus, duration_ms: float, note: str | None) -> Any:
        # Earlier attempts' errors stay in payhook_run_failure, not on a run that is done;
        # `note` is a skipped run's reason.
        return self._guarded(run).values(
            status=status.value,
            finished_at=utcnow(),
            duration_ms=duration_ms,
            last_error_type=None,
            last_error=note,
            last_traceback=None,
            next_attempt_at=None,
            lease_token=None,
            lease_expires_at=None,
        )

    def record_failure(
        self,
        run: ClaimedRun,
        *,
        attempt: int,
        error_type: str,
        message: str,
        traceback: str,
        next_attempt_at: datetime | None,
        duration_ms: float | None = None,
        release: bool = True,
    ) -> bool:
        """Store one failed attempt; schedule the next one, or mark the run dead."""
        now = utcnow()
        values: dict[str, Any] = {
            "last_error_type": error_type,
            "last_error": message,
            "last_traceback": traceback,
        }
        if release:
            values.update(
                status=RunStatus.FAILED.value if next_attempt_at else RunStatus.DEAD.value,
                next_attempt_at=next_attempt_at,
                finished_at=now,
                duration_ms=duration_ms,
                lease_token=None,
                lease_expires_at=None,
            )
        with self.transaction() as conn:
            if conn.execute(self._guarded(run).values(**values)).rowcount != 1:
                return False
            conn.execute(
                FAILURE.insert(),
                {
                    "run_id": run.id,
                    "attempt": attempt,
                    "error_type": error_type,
                    "message": message,
                    "traceback": traceback,
                    "failed_at": now,
                },
            )
        return True

    def release(self, runs: Sequence[ClaimedRun]) -> None:
        """Give back claimed runs that were never started (shutdown); the attempt is undone."""
        with self.transaction() as conn:
            for run in runs:
                conn.execute(
                    self._guarded(run).values(
                        status=RunStatus.FAILED.value if run.attempts > 1 else RunStatus.PENDING.value,
                        attempts=RUN.c.attempts - 1,
                        lease_token=None,
                        lease_expires_at=None,
                        next_attempt_at=utcnow(),
                    )
                )

    def renew_lease(self, run: ClaimedRun, seconds: float) -> bool:
        """Before starting a run that waited in a queue: a fresh lease, if the claim still holds."""
        with self.transaction() as conn:
            result = conn.execute(
                self._guarded(run).values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
            )
        return bool(result.rowcount == 1)

    def extend_lease(self, run_id: int, token: str, seconds: float) -> bool:
        if self.is_sqlite:
            # The running handler holds SQLite's write lock, and a claim needs it: nobody
            # can take this run over until the handler's transaction ends.
            return True
        with self.transaction() as conn:
            result = conn.execute(
                update(RUN)
                .where(RUN.c.id == run_id, RUN.c.lease_token == token)
                .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
            )
        return result.rowcount == 1

    def _guarded(self, run: ClaimedRun) -> Any:
        # Every write about a claimed run checks the claim still holds: a worker that lost
        # its lease must not overwrite what the run's new owner did.
        return update(RUN).where(
            RUN.c.id == run.id,
            RUN.c.lease_token == run.lease_token,
            RUN.c.status == RunStatus.RUNNING.value,
        )

    def newer_event_applied(self, session: Session, event_id: int, plugin: str) -> bool:
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
                RUN.c.status == RunStatus.SUCCEEDED.value,
            )
        )
        return bool(session.execute(query).scalar())


def _describe(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [""])[0]
    return f"{type(original).__name__}: {first_line}"


def _make_engine(config: DatabaseConfig, pool_size: int) -> Engine:
    if config.is_sqlite:
        return make_sqlite_engine(config, pool_size)
    return create_engine(
        config.url,
        pool_size=pool_size,
        # Bounded, so many processes on one server stay under its max_connections.
        max_overflow=2,
        pool_timeout=config.connect_timeout,
        connect_args={"connect_timeout": max(1, round(config.connect_timeout))},
    )
