"""Prometheus metrics after a known sequence of deliveries and runs, in this process.

The counters are this process's and every test adds to them, so each test uses tenants of
its own and compares values before and after. `test_metrics_processes.py` covers a separate
worker process (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from payhook import GiveUp, Skip
from payhook.config import DatabaseConfig
from payhook.operator.metrics import StoreGauges
from payhook.store.engine import Store
from payhook.testing import store_backends
from payhook.testing.samples import load_event
from prometheus_client import REGISTRY

from .helpers import RecordingPlugin, create_effect_table


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


OUTCOMES = ("succeeded", "failed", "dead", "skipped")


def runs_by_outcome(tenant: str, plugin: str) -> dict[str, float]:
    return {o: value("payhook_handler_runs_total", tenant=tenant, plugin=plugin, outcome=o) for o in OUTCOMES}


def gauges(store: Store) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in StoreGauges(store).collect()
        for sample in family.samples
    }


@store_backends
def test_deliveries_by_tenant_and_outcome(make_payhook: Any, tmp_path: Path) -> None:
    plugin = RecordingPlugin("rec")
    harness = make_payhook({"rec": plugin}, tenants={"m-deliver": {"plugins": ["rec"]}})
    create_effect_table(harness.store.engine)
    names = ["accepted", "duplicate", "ignored", "invalid_signature", "stale_timestamp", "not_an_event"]
    before = {name: value("payhook_deliveries_total", tenant="m-deliver", outcome=name) for name in names}
    unknown_before = value("payhook_deliveries_total", tenant="", outcome="unknown_tenant")
    ingest_before = value("payhook_ingest_seconds_count")

    event = load_event("payment_intent.succeeded")
    assert harness.deliver(event).json()["status"] == "accepted"
    assert harness.deliver(event).json()["status"] == "duplicate"
    assert harness.deliver(load_event("customer.created")).json()["status"] == "ignored"
    assert harness.deliver(load_event("customer.created"), secret="whsec_wrong").status_code == 400
    an_hour_ago = int(time.time()) - 3600
    assert harness.deliver(load_event("customer.created"), timestamp=an_hour_ago).status_code == 400
    assert harness.deliver(b'{"object": "list"}').status_code == 400
    assert harness.deliver(event, tenant="no-such-tenant-named-by-a-stranger").status_code == 404

    for name in names:
        assert value("payhook_deliveries_total", tenant="m-deliver", outcome=name) == before[name] + 1, name
    # A stranger's path never becomes a label value.
    assert value("payhook_deliveries_total", tenant="", outcome="unknown_tenant") == unknown_before + 1
    stranger = "no-such-tenant-named-by-a-stranger"
    assert value("payhook_deliveries_total", tenant=stranger, outcome="unknown_tenant") == 0
    assert value("payhook_ingest_seconds_count") == ingest_before + 7


@store_backends
def test_handler_runs_by_outcome_and_the_store_gauges(make_payhook: Any) -> None:
    plugin = RecordingPlugin(
        "rec",
        {
            "payment_intent.succeeded": ["flaky"],
            "charge.refunded": ["skipper"],
            "charge.captured": ["quitter"],
        },
    )
    plugin.fail("flaky", lambda n: RuntimeError("ledger offline") if n == 1 else None)
    plugin.fail("skipper", lambda n: Skip("nothing to do"))
    plugin.fail("quitter", lambda n: GiveUp("not ours"))
    harness = make_payhook({"rec": plugin}, tenants={"m-runs": {"plugins": ["rec"]}})
    create_effect_table(harness.store.engine)
    before = runs_by_outcome("m-runs", "rec")
    seconds_before = value("payhook_handler_seconds_count", plugin="rec")

    harness.deliver(load_event("payment_intent.succeeded"))
    harness.deliver(load_event("charge.refunded.full"))
    harness.deliver(load_event("charge.captured"))
    due = gauges(harness.store)
    assert due[("payhook_runs_due", ())] == 3
    assert due[("payhook_oldest_due_run_age_seconds", ())] >= 0
    assert due[("payhook_store_up", ())] == 1

    harness.process()  # flaky fails once, skipper skips, quitter gives up
    harness.process(include_scheduled=True)  # flaky succeeds

    after = runs_by_outcome("m-runs", "rec")
    assert {o: after[o] - before[o] for o in OUTCOMES} == {
        "succeeded": 1,
        "failed": 1,
        "dead": 1,
        "skipped": 1,
    }
    assert value("payhook_handler_seconds_count", plugin="rec") == seconds_before + 4
    done = gauges(harness.store)
    assert done[("payhook_runs_due", ())] == 0
    assert done[("payhook_oldest_due_run_age_seconds", ())] == 0
    assert done[("payhook_dead_runs", (("plugin", "rec"), ("tenant", "m-runs")))] == 1


def test_gauges_say_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    store = Store(DatabaseConfig(url=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}"))
    try:
        assert gauges(store) == {("payhook_store_up", ()): 0}
    finally:
        store.dispose()


@pytest.mark.parametrize("outcome", ["succeeded"])
def test_run_counting_reuses_its_label_children(outcome: str) -> None:
    from payhook import metrics

    metrics.run_finished("m-cache", "p", outcome, 0.001)
    children = metrics._run_children[("m-cache", "p", outcome)]
    metrics.run_finished("m-cache", "p", outcome, 0.002)
    assert metrics._run_children[("m-cache", "p", outcome)] is children
    assert value("payhook_handler_runs_total", tenant="m-cache", plugin="p", outcome=outcome) == 2


def test_a_metrics_file_another_process_is_still_creating_does_not_fail_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payhook.operator.metrics import ProcessFiles
    from prometheus_client import CollectorRegistry, Counter, generate_latest, values

    # One process's real file, and another's just created (empty: not yet sized or headed).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4242))
    written = CollectorRegistry()
    Counter("payhook_scrape_probe", "probe", registry=written).inc(3)
    (tmp_path / "counter_9999.db").touch()

    registry = CollectorRegistry()
    registry.register(ProcessFiles(str(tmp_path)))
    exposition = generate_latest(registry).decode()
    assert "payhook_scrape_probe_total 3.0" in exposition
