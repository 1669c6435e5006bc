"""Prune old payloads and finished runs, keeping each event's key so redeliveries stay duplicates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update

from payhook.store.engine import Store
from payhook.store.models import utcnow
from payhook.store.runs import EVENT, runs_of

__all__ = ["PruneResult", "prune"]


@dataclass(frozen=True)
class PruneResult:
    events: int
    runs: int


def prune(
    store: Store,
    older_than_days: float,
    *,
    batch: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Prune events received more than `older_than_days` ago whose runs have all finished
    (succeeded, skipped or dead).

    A pruned event keeps its row (tenant, Stripe event id, type, times) with an empty
    payload: the unique key that deduplicates deliveries stays, so a late redelivery is still
    answered `duplicate` and never runs a handler again. Its runs and their failures are
    deleted. Events with a run still pending, running or failed are kept whole.
    Works in batches of `batch` events, one transaction each, so it never holds locks long.
    With `progress`, the events to prune are counted first, and `progress(done, total)` is
    called after each batch.
    """
    if older_than_days < 0:
        raise ValueError("older_than_days must not be negative")
    cutoff = utcnow() - timedelta(days=older_than_days)
    runs_ = runs_of(store)
    unfinished = runs_.unfinished_exists()
    prunable = (EVENT.c.received_at < cutoff, EVENT.c.pruned_at.is_(None), ~unfinished)
    total = 0
    if progress is not None:
        with store.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(EVENT).where(*prunable)).scalar_one())
    events = runs = 0
    while True:
        with store.transaction() as conn:
            ids = list(conn.execute(select(EVENT.c.id).where(*prunable).limit(batch)).scalars())
            if not ids:
                return PruneResult(events, runs)
            runs += runs_.delete_for_events(conn, ids)
            events += conn.execute(
                update(EVENT).where(EVENT.c.id.in_(ids)).values(payload="", pruned_at=utcnow())
            ).rowcount
        if progress is not None:
            # Runs that finish meanwhile can add events beyond the count; the bar just fills.
            progress(events, max(total, events))
