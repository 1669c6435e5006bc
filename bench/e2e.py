"""End-to-end figures from the database: receipt, handler commit, and their checks.

The processes stamp the times themselves, so nothing here depends on when the harness polls:
`payhook_event.received_at` is stamped once per ingest transaction as it begins (the request
is already read and verified), and `payhook_handler_run.finished_at` in the handler's
transaction just before it commits. Both come from the same machine's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from payhook.store.models import Event, HandlerRun
from sqlalchemy import Engine, func, select, text

__all__ = ["Lags", "Window", "effects_check", "lags", "nearest_rank", "window"]

EVENT = Event.__table__  # type: ignore[attr-defined]
RUN = HandlerRun.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Window:
    """From the first receipt (or claim) to the last handler commit of a set of runs."""

    runs: int
    first: datetime | None
    last: datetime | None

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first).total_seconds()

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds > 0 else 0.0


def window(engine: Engine, after_event_id: int = 0, start: str = "received") -> Window:
    """The succeeded runs of events after `after_event_id` (the warm-up's, say).

    `start` is "received" (the first of those events stored, with or without a run: the
    first delivery) or "claimed" (the first run's `started_at`), which measures the workers
    alone when the runs were stored before any worker started.
    """
    query = (
        select(func.count(RUN.c.id), func.min(RUN.c.started_at), func.max(RUN.c.finished_at))
        .select_from(RUN.join(EVENT, EVENT.c.id == RUN.c.event_id))
        .where(RUN.c.status == "succeeded", EVENT.c.id > after_event_id)
    )
    first_received = select(func.min(EVENT.c.received_at)).where(EVENT.c.id > after_event_id)
    with engine.connect() as conn:
        runs, first_claimed, last_at = conn.execute(query).one()
        first_at = conn.execute(first_received).scalar_one() if start == "received" else first_claimed
    return Window(int(runs), first_at, last_at)


def nearest_rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (the same rule as loadgen's latencies)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Lags:
    """Receipt-to-commit seconds of every succeeded run, ascending."""

    seconds: list[float]
    # Median lag of the runs of the first and the last quarter of events (by receipt): equal
    # when the workers kept up, the second far above the first when a backlog grew.
    first_quarter_median: float
    last_quarter_median: float

    def ms(self, q: float) -> float:
        return nearest_rank(self.seconds, q) * 1000


def lags(engine: Engine, after_event_id: int = 0) -> Lags:
    """Receipt-to-commit lag of every succeeded run of the events after `after_event_id`."""
    query = (
        select(EVENT.c.received_at, RUN.c.finished_at)
        .select_from(RUN.join(EVENT, EVENT.c.id == RUN.c.event_id))
        .where(RUN.c.status == "succeeded", EVENT.c.id > after_event_id)
        .order_by(EVENT.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    in_order = [(finished - received).total_seconds() for received, finished in rows]
    quarter = max(1, len(in_order) // 4)
    return Lags(
        sorted(in_order),
        nearest_rank(sorted(in_order[:quarter]), 50),
        nearest_rank(sorted(in_order[-quarter:]), 50),
    )


def effects_check(engine: Engine) -> dict[str, int]:
    """Runs against the bench plugin's rows: exactly one `bench_hit` per run, none extra.

    `bench_hit` is keyed by (tenant, event id), the handler merges into it, and each handled
    event has exactly one bench run; so equal counts plus a full match mean one effect per run.
    """
    query = """
        SELECT
            (SELECT COUNT(*) FROM payhook_handler_run) AS runs,
            (SELECT COUNT(*) FROM bench_hit) AS hits,
            (SELECT COUNT(*) FROM payhook_handler_run r
               JOIN payhook_event e ON e.id = r.event_id
               JOIN bench_hit h ON h.tenant = e.tenant AND h.stripe_event_id = e.stripe_event_id
            ) AS matched
    """
    with engine.connect() as conn:
        runs, hits, matched = conn.execute(text(query)).one()
    return {"runs": int(runs), "hits": int(hits), "matched": int(matched)}
