"""Racing deliveries of one event: one stored event, each handler applied once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

import httpx
from payhook import create_app
from payhook.testing import PayhookHarness, build_config, signed_headers, store_backends

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
    harness.process()  # whatever the in-process worker has not done yet
    assert sorted(e.handler for e in effects(harness.store.engine)) == ["first", "second"]
    assert sorted(name for name, _ in plugin.calls) == ["first", "second"]
