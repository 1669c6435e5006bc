"""Prometheus instruments, and the two plain functions the request path and the worker call.

Counters and histograms live in this process; with `PROMETHEUS_MULTIPROC_DIR` set (before
payhook starts) every process writes them to files in that directory, so the operator app of
`payhook serve` also reports what separate `payhook worker` processes did. The gauges about
the queue are not kept here: `StoreGauges` reads them from the store at each scrape, so they
are right whichever process changed the runs.

Label values come from the configuration (tenant slugs, plugin names) or from fixed sets
(outcomes), never from a request: a delivery to an unknown tenant counts with `tenant=""`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from payhook.store.engine import Store
from payhook.store.models import RunStatus, utcnow
from payhook.store.runs import DUE, EVENT, RUN

__all__ = [
    "MULTIPROC_ENV",
    "StoreGauges",
    "delivery_answered",
    "exposition_registry",
    "run_finished",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DELIVERIES = Counter(
    "payhook_deliveries",
    "Deliveries answered, by tenant and outcome: the 200 answer's status or the error code.",
    ["tenant", "outcome"],
)
HANDLER_RUNS = Counter(
    "payhook_handler_runs",
    "Handler run executions, by tenant, plugin and outcome.",
    ["tenant", "plugin", "outcome"],
)
INGEST_SECONDS = Histogram(
    "payhook_ingest_seconds",
    "Seconds from a delivery's request to its answer (verify, parse, store).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HANDLER_SECONDS = Histogram(
    "payhook_handler_seconds",
    "Seconds one handler run execution took, commit and bookkeeping included.",
    ["plugin"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

# The labelled children, looked up once per label set: a run then costs one dict lookup,
# one increment and one observation (prometheus_client's .labels() builds a tuple of
# strings and takes a lock on every call).
_delivery_children: dict[tuple[str, str], Any] = {}
_run_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_children_lock = threading.Lock()


def delivery_answered(tenant: str, outcome: str, seconds: float) -> None:
    """Count one answered delivery; `tenant` is "" unless it is a configured tenant."""
    key = (tenant, outcome)
    child = _delivery_children.get(key)
    if child is None:
        with _children_lock:
            child = _delivery_children.setdefault(key, DELIVERIES.labels(tenant, outcome))
    child.inc()
    INGEST_SECONDS.observe(seconds)


def run_finished(tenant: str, plugin: str, outcome: str, seconds: float) -> None:
    """Count one executed handler run and how long it took."""
    key = (tenant, plugin, outcome)
    children = _run_children.get(key)
    if children is None:
        with _children_lock:
            children = _run_children.setdefault(
                key, (HANDLER_RUNS.labels(tenant, plugin, outcome), HANDLER_SECONDS.labels(plugin))
            )
    counter, histogram = children
    counter.inc()
    histogram.observe(seconds)


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


def exposition_registry(store: Store) -> CollectorRegistry:
    """What `GET /metrics` shows: every payhook process's instruments, and the store gauges."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_DefaultRegistry())
    registry.register(StoreGauges(store))
    return registry
