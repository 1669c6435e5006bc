"""What the status page reads about each tenant's health, and activity by hour.

Read-only queries; each opens a plain connection (no write transaction, so on SQLite it
never waits for the write lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from payhook.config import Config
from payhook.store.engine import Store
from payhook.store.models import RunStatus
from payhook.store.runs import EVENT, FAILURE, RUN

__all__ = ["HourlyActivity", "TenantHealth", "activity", "tenant_health"]

S = RunStatus


@dataclass(frozen=True)
class TenantHealth:
    slug: str
    active: bool
    plugins: tuple[str, ...]
    events_24h: int
    last_received_at: datetime | None
    due: int
    failed: int
    dead: int

    @property
    def state(self) -> str:
        """`inactive`, `dead` (runs wait for a replay), `retrying` (runs failed), or `ok`."""
        if not self.active:
            return "inactive"
        if self.dead:
            return "dead"
        if self.failed:
            return "retrying"
        return "ok"


def tenant_health(store: Store, config: Config, now: datetime) -> list[TenantHealth]:
    """Each configured tenant: deliveries in the last 24 h, and its runs waiting or failing."""
    since = now - timedelta(hours=24)
    received = (
        select(EVENT.c.tenant, func.count(), func.max(EVENT.c.received_at))
        .where(EVENT.c.received_at >= since)
        .group_by(EVENT.c.tenant)
    )
    waiting = (
        select(EVENT.c.tenant, RUN.c.status, func.count())
        .join(EVENT, EVENT.c.id == RUN.c.event_id)
        .where(RUN.c.status.in_([S.PENDING.value, S.FAILED.value, S.DEAD.value]))
        .group_by(EVENT.c.tenant, RUN.c.status)
    )
    with store.engine.connect() as conn:
        recent = {row[0]: (int(row[1]), row[2]) for row in conn.execute(received)}
        counts: dict[tuple[str, str], int] = {(row[0], row[1]): int(row[2]) for row in conn.execute(waiting)}
    return [
        TenantHealth(
            slug=slug,
            active=tenant.active,
            plugins=tenant.plugins,
            events_24h=recent.get(slug, (0, None))[0],
            last_received_at=recent.get(slug, (0, None))[1],
            due=counts.get((slug, S.PENDING.value), 0),
            failed=counts.get((slug, S.FAILED.value), 0),
            dead=counts.get((slug, S.DEAD.value), 0),
        )
        for slug, tenant in sorted(config.tenants.items())
    ]


@dataclass(frozen=True)
class HourlyActivity:
    start: datetime
    deliveries: int
    failures: int


def activity(store: Store, now: datetime, hours: int = 24, tenant: str | None = None) -> list[HourlyActivity]:
    """Events stored and failed attempts in each of the last `hours` hours (UTC), oldest first."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    sqlite = store.is_sqlite
    received_hour = _hour(EVENT.c.received_at, sqlite)
    deliveries = select(received_hour, func.count()).where(EVENT.c.received_at >= start)
    failed_hour = _hour(FAILURE.c.failed_at, sqlite)
    failures = select(failed_hour, func.count()).where(FAILURE.c.failed_at >= start)
    if tenant is not None:
        deliveries = deliveries.where(EVENT.c.tenant == tenant)
        failures = failures.join(RUN, RUN.c.id == FAILURE.c.run_id).join(
            EVENT, and_(EVENT.c.id == RUN.c.event_id, EVENT.c.tenant == tenant)
        )
    with store.engine.connect() as conn:
        delivered = {row[0]: int(row[1]) for row in conn.execute(deliveries.group_by(received_hour))}
        failed = {row[0]: int(row[1]) for row in conn.execute(failures.group_by(failed_hour))}
    hours_ = [start + timedelta(hours=i) for i in range(hours)]
    return [
        HourlyActivity(hour, delivered.get(_hour_key(hour), 0), failed.get(_hour_key(hour), 0))
        for hour in hours_
    ]


def _hour(column: Any, sqlite: bool) -> Any:
    """The UTC hour of a time column as text `YYYY-MM-DD HH`, the same on both databases."""
    if sqlite:
        # SQLite keeps these columns as naive UTC text (models.UTCDateTime).
        return func.strftime("%Y-%m-%d %H", column)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")


def _hour_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d %H")
