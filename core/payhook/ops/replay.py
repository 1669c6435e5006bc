"""Re-run handler runs on stored events: one event, or every run a selection matches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select

from payhook.config import Config
from payhook.plugins.host import PluginHost
from payhook.plugins.types import Handler
from payhook.store.engine import Store
from payhook.store.models import RunStatus, utcnow
from payhook.store.runs import EVENT, RUN, Runs, runs_of

__all__ = ["PlannedRun", "ReplayPlan", "ReplayResult", "ReplaySelection", "plan_replay", "replay"]

# Runs are re-armed in chunks of this many; a progress callback hears of each chunk.
CHUNK = 500

Progress = Callable[[int, int], None]
"""Called as `progress(done, total)` while runs are re-armed."""


@dataclass(frozen=True)
class ReplaySelection:
    """Which runs to replay. Every given field must match; none given matches everything."""

    stripe_event_id: str | None = None
    tenant: str | None = None
    event_type: str | None = None
    plugin: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None
    run_id: int | None = None  # one run (the status page's replay button)


@dataclass(frozen=True)
class ReplayResult:
    rearmed: int
    created: int
    run_ids: tuple[int, ...]


@dataclass(frozen=True)
class PlannedRun:
    """A run a replay would re-arm (`status` is its status now), or create (`status` None)."""

    run_id: int | None
    tenant: str
    stripe_event_id: str
    plugin: str
    handler: str
    status: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "event": self.stripe_event_id,
            "plugin": self.plugin,
            "handler": self.handler,
            "status": self.status,
        }


@dataclass(frozen=True)
class ReplayPlan:
    rearm: tuple[PlannedRun, ...]
    create: tuple[PlannedRun, ...]


def _statuses(only_failed: bool) -> list[str]:
    statuses = [RunStatus.FAILED.value, RunStatus.DEAD.value]
    if not only_failed:
        statuses += [RunStatus.SUCCEEDED.value, RunStatus.SKIPPED.value]
    return statuses


def _selected_runs(selection: ReplaySelection, statuses: list[str], *columns: Any) -> Any:
    query = (
        select(*columns)
        .join(EVENT, EVENT.c.id == RUN.c.event_id)
        .where(RUN.c.status.in_(statuses), *_event_filters(selection))
    )
    if selection.plugin is not None:
        query = query.where(RUN.c.plugin == selection.plugin)
    if selection.run_id is not None:
        query = query.where(RUN.c.id == selection.run_id)
    return query.order_by(RUN.c.id)


def plan_replay(
    store: Store,
    selection: ReplaySelection,
    *,
    only_failed: bool = True,
    plugins: PluginHost | None = None,
    config: Config | None = None,
) -> ReplayPlan:
    """What `replay` with the same arguments would do now; changes nothing (`--dry-run`)."""
    query = _selected_runs(
        selection,
        _statuses(only_failed),
        RUN.c.id,
        EVENT.c.tenant,
        EVENT.c.stripe_event_id,
        RUN.c.plugin,
        RUN.c.handler,
        RUN.c.status,
    )
    with store.engine.connect() as conn:
        rearm = tuple(PlannedRun(*row) for row in conn.execute(query))
        create: list[PlannedRun] = []
        if not only_failed and plugins is not None and config is not None:
            for event, missing in _missing_handlers(conn, selection, plugins, config):
                create += [
                    PlannedRun(None, event.tenant, event.stripe_event_id, h.plugin, h.name, None)
                    for h in missing
                ]
    return ReplayPlan(rearm=rearm, create=tuple(create))


def replay(
    store: Store,
    selection: ReplaySelection,
    *,
    requested_by: str,
    only_failed: bool = True,
    plugins: PluginHost | None = None,
    config: Config | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Make the selected runs due now, with a fresh attempt budget, and record who asked.

    With `only_failed` (the default) only `failed` and `dead` runs are re-armed. Without it,
    `succeeded` and `skipped` runs are re-run too, and, given `plugins` and `config`, runs are created for
    handlers that apply now but did not when the event arrived (a plugin installed later).
    Runs that are `pending` or `running` are left alone: they are about to run anyway.
    Pruned events are never replayed: their payload is gone. All of it is one transaction;
    `progress(done, total)` is called after each chunk of runs is re-armed.
    """
    statuses = _statuses(only_failed)
    runs = runs_of(store)
    now = utcnow()
    with store.transaction() as conn:
        created = 0
        if not only_failed and plugins is not None and config is not None:
            created = _create_missing_runs(conn, runs, selection, plugins, config, now)
        query = _selected_runs(selection, statuses, RUN.c.id)
        if not store.is_sqlite:
            query = query.with_for_update(of=RUN, skip_locked=True)
        run_ids = tuple(conn.execute(query).scalars())
        for start in range(0, len(run_ids), CHUNK):
            chunk = run_ids[start : start + CHUNK]
            runs.replay(conn, chunk, statuses=statuses, requested_by=requested_by, now=now)
            if progress is not None:
                progress(start + len(chunk), len(run_ids))
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
    if selection.run_id is not None:
        filters.append(
            EVENT.c.id == select(RUN.c.event_id).where(RUN.c.id == selection.run_id).scalar_subquery()
        )
    return filters


def _create_missing_runs(
    conn: Connection,
    runs: Runs,
    selection: ReplaySelection,
    plugins: PluginHost,
    config: Config,
    now: datetime,
) -> int:
    created = 0
    for event, missing in _missing_handlers(conn, selection, plugins, config):
        created += runs.create_on(conn, event.id, missing, now)
    return created


def _missing_handlers(
    conn: Connection, selection: ReplaySelection, plugins: PluginHost, config: Config
) -> Iterator[tuple[Any, list[Handler]]]:
    """(event, handlers that apply to it now but have no run), for each selected event."""
    events = conn.execute(
        select(EVENT.c.id, EVENT.c.tenant, EVENT.c.stripe_event_id, EVENT.c.type).where(
            and_(*_event_filters(selection))
        )
    ).all()
    for event in events:
        tenant = config.tenants.get(event.tenant)
        if tenant is None:
            continue
        wanted = [
            handler
            for handler in plugins.handlers_for(event.type, tenant)
            if selection.plugin in (None, handler.plugin)
        ]
        rows = conn.execute(select(RUN.c.plugin, RUN.c.handler).where(RUN.c.event_id == event.id))
        existing = {(row.plugin, row.handler) for row in rows}
        missing = [handler for handler in wanted if (handler.plugin, handler.name) not in existing]
        if missing:
            yield event, sorted(missing, key=lambda h: (h.plugin, h.name))
