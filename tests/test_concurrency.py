"""Racing deliveries of one event: one stored event, each handler applied once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import httpx
from payhook import create_app
from payhook.testing import PayhookHarness, build_config, signed_headers, store_backends, wait_until

from .helpers import RecordingPlugin, create_effect_table, effects

pytestmark = store_backends

DELIVERIES = 50


async def deliver_concurrently(app: Any, body: bytes, count: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payhook") as client:
        return await asyncio.gather(
            *(client.post("/test", content=body, headers=signed_headers(body)) for _ in range(count))
        )


def test_fifty_concurrent_deliveries_in_one_process(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["first", "second"]})
    harness: PayhookHarness = make_payhook({"rec": plugin})
    create_effect_table(harness.store.engine)
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()

    responses = harness.client.portal.call(deliver_concurrently, harness.app, body, DELIVERIES)

    assert {r.status_code for r in responses} == {200}
    assert Counter(r.json()["status"] for r in responses) == {"accepted": 1, "duplicate": DELIVERIES - 1}
    assert len(harness.events()) == 1 and len(harness.runs()) == 2
    harness.process()
    assert sorted(e.handler for e in effects(harness.store.engine)) == ["first", "second"]


def test_fifty_concurrent_deliveries_across_two_receivers(
    payhook_database_url: str, make_payhook: Any, stripe_event: Any
) -> None:
    """Two receivers with their own connection pools: the database settles the race."""
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["first", "second"]})
    harness: PayhookHarness = make_payhook({"rec": plugin}, processing={"worker": True})
    create_effect_table(harness.store.engine)
    other = create_app(build_config(payhook_database_url, plugins={"rec": plugin}), {"rec": plugin})
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
    results: list[list[httpx.Response]] = []
    barrier = threading.Barrier(2)

    async def second_receiver() -> list[httpx.Response]:
        async with other.payhook.lifespan():
            barrier.wait()
            return await deliver_concurrently(other, body, DELIVERIES // 2)

    thread = threading.Thread(target=lambda: results.append(asyncio.run(second_receiver())))
    thread.start()
    barrier.wait()
    results.append(harness.client.portal.call(deliver_concurrently, harness.app, body, DELIVERIES // 2))
    thread.join(60)

    statuses = Counter(r.json()["status"] for batch in results for r in batch)
    assert statuses == {"accepted": 1, "duplicate": DELIVERIES - 1}
    assert len(harness.events()) == 1 and len(harness.runs()) == 2
    # The in-process worker runs them; it may be in the middle of a run right now, so wait for
    # the state rather than claim (a run it holds cannot be claimed here).
    wait_until(lambda: {run.status for run in harness.runs()} == {"succeeded"}, what="both runs done")
    assert sorted(e.handler for e in effects(harness.store.engine)) == ["first", "second"]
    assert sorted(name for name, _ in plugin.calls) == ["first", "second"]


def test_two_receivers_writing_overlapping_batches_never_deadlock(
    payhook_database_url: str, stripe_event: Any
) -> None:
    """Each receiver's batch holds the same keys in its own order: the rows are locked in key
    order on both sides, so neither waits on the other in a cycle."""
    from payhook.config import DatabaseConfig
    from payhook.store.engine import Store
    from payhook.store.eventlog import EventLog, _Conflict
    from payhook.store.migrations import upgrade
    from payhook.store.runs import runs_of

    from .test_writer import handled

    class CountingLog(EventLog):
        """Counts the batches the database aborted as deadlocks (and the log retried)."""

        deadlocks = 0

        def _append_in_order(self, deliveries: Any, deadline: Any) -> Any:
            try:
                return super()._append_in_order(deliveries, deadline)
            except _Conflict:
                self.deadlocks += 1
                raise

    stores = [Store(DatabaseConfig(url=payhook_database_url)) for _ in range(2)]
    upgrade(stores[0].engine, include_plugins=False)
    logs = [CountingLog(store, runs_of(store)) for store in stores]
    statuses: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    together = threading.Barrier(2, timeout=30)

    def receive(log: EventLog, batches: list[list[Any]]) -> None:
        for batch in batches:
            try:
                together.wait()  # both batches in flight at once
                results = log.append(batch)
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                statuses.update(result.status for result in results)

    rounds = [[handled(stripe_event) for _ in range(20)] for _ in range(10)]
    orders = [[batch, batch[::-1]] for batch in rounds]  # the same keys, opposite orders
    threads = [
        threading.Thread(target=receive, args=(log, [order[side] for order in orders]))
        for side, log in enumerate(logs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert errors == []
    assert [log.deadlocks for log in logs] == [0, 0]
    assert statuses == {"accepted": 200, "duplicate": 200}
    with stores[0].transaction() as conn:
        events = conn.exec_driver_sql("SELECT count(*) FROM payhook_event").scalar()
        runs = conn.exec_driver_sql("SELECT count(*) FROM payhook_handler_run").scalar()
    assert (events, runs) == (200, 200)
    for store in stores:
        store.dispose()
