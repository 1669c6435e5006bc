"""The ingest writer: many deliveries per transaction, and one bad delivery fails alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from payhook.config import DatabaseConfig
from payhook.eventlog import Delivery, EventLog, IngestResult
from payhook.ingest import BatchWriter, parse_event, to_delivery
from payhook.migrations import upgrade
from payhook.store import Store, StoreUnavailable
from payhook.testing import store_backends


class PickyLog(EventLog):
    """A real event log that refuses any batch holding a delivery marked `poison`."""

    def __init__(self, url: str) -> None:
        super().__init__(Store(DatabaseConfig(url=url)))
        self.batches: list[int] = []

    def append(self, deliveries: Sequence[Delivery]) -> list[IngestResult]:
        self.batches.append(len(deliveries))
        if any(delivery.type == "poison" for delivery in deliveries):
            raise ValueError("this delivery cannot be stored")
        return super().append(deliveries)


def delivery(stripe_event: Any, event_type: str = "customer.created") -> Delivery:
    event = stripe_event("customer.created", type=event_type)
    body = json.dumps(event).encode()
    parsed, payload = parse_event(body)
    return to_delivery("t", parsed, payload, 0, ())


async def submit_all(writer: BatchWriter, deliveries: list[Delivery]) -> list[Any]:
    writer.start()
    try:
        return await asyncio.gather(*(writer.submit(d) for d in deliveries), return_exceptions=True)
    finally:
        await writer.stop()


@store_backends
def test_concurrent_deliveries_share_transactions_and_a_bad_one_fails_alone(
    payhook_database_url: str, stripe_event: Any
) -> None:
    log = PickyLog(payhook_database_url)
    upgrade(log.store.engine, include_plugins=False)
    deliveries = [delivery(stripe_event) for _ in range(20)]
    deliveries.insert(7, delivery(stripe_event, "poison"))
    results = asyncio.run(submit_all(BatchWriter(log), deliveries))
    assert isinstance(results[7], ValueError)
    assert [r.status for i, r in enumerate(results) if i != 7] == ["ignored"] * 20
    assert log.batches[0] > 1  # concurrent submissions were grouped
    log.store.dispose()


def test_store_down_fails_the_whole_batch_at_once(stripe_event: Any) -> None:
    store = Store(DatabaseConfig(url="postgresql+psycopg://postgres@127.0.0.1:1/none", connect_timeout=1))
    deliveries = [delivery(stripe_event) for _ in range(10)]
    results = asyncio.run(submit_all(BatchWriter(EventLog(store)), deliveries))
    assert all(isinstance(result, StoreUnavailable) for result in results)
