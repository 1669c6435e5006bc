"""Re-run handler runs on stored events: one event, or every run a selection matches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select

from .config import Config
from .models import RunStatus, utcnow
from .plugins import PluginHost
from .runs import EVENT, RUN, Runs, runs_of
from .store import Store

__all__ = ["ReplayResult", "ReplaySelection", "replay"]


@dataclass(frozen=True)
class ReplaySelection:
    """Which runs to replay. Every given field must match; none given matches everything."""

    stripe_event_id: str | None = None
    tenant: str | None = None
    event_type: str | None = None
    plugin: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None


@dataclass(frozen=True)
class ReplayResult:
    rearmed: int
    created: int
    run_ids: tuple[int, ...]


def replay(
    store: Store,
    selection: ReplaySelection,
    *,
    requested_by: str,
    only_failed: bool = True,
    plugins: PluginHost | None = None,
    config: Config | None = None,
) -> ReplayResult:
    """Make the selected runs due now, with a fresh attempt budget, and record who asked.

    With `only_failed` (the default) only `failed` and `dead` runs are re-armed. Without it,
    `succeeded` and `skipped` runs are re-run too, and, given `plugins` and `config`, runs are created for
    handlers that apply now but did not when the event arrived (a plugin installed later).
    Runs that are `pending` or `running` are left alone: they are about to run anyway.
    Pruned events are never replayed: their payload is gone.
    """
    statuses = [RunStatus.FAILED.value, RunStatus.DEAD.value]
    if not only_failed:
        statuses += [RunStatus.SUCCEEDED.value, RunStatus.SKIPPED.value]
    runs = runs_of(store)
    now = utcnow()
    with store.transaction() as conn:
        created = 0
        if not only_failed and plugins is not None and config is not None:
            created = _create_missing_runs(conn, runs, selection, plugins, config, now)
        query = (
            select(RUN.c.id)
            .join(EVENT, EVENT.c.id == RUN.c.event_id)
            .where(RUN.c.status.in_(statuses), *_event_filters(selection))
        )
        if selection.plugin is not None:
            query = query.where(RUN.c.plugin == selection.plugin)
        if not store.is_sqlite:
            query = query.with_for_update(of=RUN, skip_locked=True)
        run_ids = tuple(conn.execute(query).scalars())
        runs.replay(conn, run_ids, statuses=statuses, requested_by=requested_by, now=now)
    return ReplayResult(rearmed=len(run_ids), created=created, run_ids=run_ids)


def _event_filters(selection: ReplaySelection) -> list[Any]:
    filters: list[Any] = [EVENT.c.pruned_at.is_(None)]
    if selection.stripe_event_id is not None:
        filters.append(EVENT.c.stripe_event_id == selection.stripe_event_id)
    if selection.tenant is not None:
        filters.append(EVENT.c.tenant == selection.tenant)
    if selection.event_type is not None:
        filters.append(EVENT.c.type == selection.event_type)
    if selection.received_after is not None:
        filters.append(EVENT.c.received_at >= selection.received_after)
    if selection.received_before is not None:
        filters.append(EVENT.c.received_at < selection.received_before)
    return filters


def _create_missing_runs(
    conn: Connection,
    runs: Runs,
    selection: ReplaySelection,
    plugins: PluginHost,
    config: Config,
    now: datetime,
) -> int:
    events = conn.execute(
        select(EVENT.c.id, EVENT.c.tenant, EVENT.c.type).where(and_(*_event_filters(selection)))
    ).all()
    created = 0
    for event in events:
        tenant = config.tenants.get(event.tenant)
        if tenant is None:
            continue
        wanted = [
            handler
            for handler in plugins.handlers_for(event.type, tenant.plugins)
            if selection.plugin in (None, handler.plugin)
        ]
        rows = conn.execute(select(RUN.c.plugin, RUN.c.handler).where(RUN.c.event_id == event.id))
        existing = {(row.plugin, row.handler) for row in rows}
        missing = [handler for handler in wanted if (handler.plugin, handler.name) not in existing]
        created += runs.create_on(conn, event.id, sorted(missing, key=lambda h: (h.plugin, h.name)), now)
    return created
