"""What `GET /metrics` shows: every payhook process's instruments, and gauges read from the
store at each scrape (`StoreGauges`), right whichever process changed the runs."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from payhook.metrics import MULTIPROC_ENV
from payhook.store.engine import Store
from payhook.store.models import RunStatus, utcnow
from payhook.store.runs import DUE, EVENT, RUN

__all__ = ["ProcessFiles", "StoreGauges", "exposition_registry"]

# A metrics file begins with the 8 bytes that say how much of it is used.
HEADER_BYTES = 8


class StoreGauges(Collector):
    """Gauges read from the store when scraped: the queue as every process left it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("payhook_store_up", "1 when the store answered this scrape's queries.")
        try:
            due, oldest, dead = self._read(utcnow())
        except Exception:
            # A scrape must still answer (and say the store is down), not fail with a 500.
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "payhook_runs_due", "Handler runs due now (pending, or failed with the retry due).", value=due
        )
        yield GaugeMetricFamily(
            "payhook_oldest_due_run_age_seconds",
            "Seconds the longest-waiting due run has been due (0 when none is): the worker's lag.",
            value=oldest,
        )
        dead_runs = GaugeMetricFamily(
            "payhook_dead_runs",
            "Handler runs that are dead: out of attempts, waiting for a replay.",
            labels=["tenant", "plugin"],
        )
        for tenant, plugin, count in dead:
            dead_runs.add_metric([tenant, plugin], count)
        yield dead_runs

    def _read(self, now: datetime) -> tuple[int, float, list[tuple[str, str, int]]]:
        due_now = (RUN.c.status.in_(DUE), RUN.c.next_attempt_at <= now)
        dead_query = (
            select(EVENT.c.tenant, RUN.c.plugin, func.count())
            .join(EVENT, EVENT.c.id == RUN.c.event_id)
            .where(RUN.c.status == RunStatus.DEAD.value)
            .group_by(EVENT.c.tenant, RUN.c.plugin)
        )
        with self.store.engine.connect() as conn:
            due, oldest = conn.execute(
                select(func.count(), func.min(RUN.c.next_attempt_at)).where(*due_now)
            ).one()
            dead = [(row[0], row[1], int(row[2])) for row in conn.execute(dead_query)]
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        return int(due), age, dead


class _DefaultRegistry(Collector):
    """This process's instruments (and prometheus_client's process and GC metrics)."""

    def collect(self) -> Iterator[Metric]:
        return iter(REGISTRY.collect())


class ProcessFiles(Collector):
    """Every process's instruments, from the files in `PROMETHEUS_MULTIPROC_DIR`.

    prometheus_client's own collector fails the whole scrape (a 500) on a file another
    process has created but not yet sized and headed, which a worker does when its first run
    ends; and forever on one left empty by a process that died just then. Such a file holds
    no value yet: it is passed over, and read at the next scrape.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        files = []
        for name in glob.glob(os.path.join(self.path, "*.db")):
            with contextlib.suppress(OSError):  # gone since the listing: its process ended
                if os.path.getsize(name) >= HEADER_BYTES:
                    files.append(name)
        merged: Iterator[Metric] = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def exposition_registry(store: Store) -> CollectorRegistry:
    """What `GET /metrics` shows: every payhook process's instruments, and the store gauges."""
    registry = CollectorRegistry()
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry.register(ProcessFiles(path))
    else:
        registry.register(_DefaultRegistry())
    registry.register(StoreGauges(store))
    return registry
