"""Prometheus instruments, and the two plain functions the request path and the worker call.

Counters and histograms live in this process; with `PROMETHEUS_MULTIPROC_DIR` set (before
payhook starts) every process writes them to files in that directory, so the operator app of
`payhook serve` also reports what separate `payhook worker` processes did. The gauges about
the queue are not kept here: `payhook.operator.metrics.StoreGauges` reads them from the
store at each scrape, so they are right whichever process changed the runs.

Label values come from the configuration (tenant slugs, plugin names) or from fixed sets
(outcomes), never from a request: a delivery to an unknown tenant counts with `tenant=""`.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Counter, Histogram

__all__ = ["MULTIPROC_ENV", "delivery_answered", "run_finished"]

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
