"""`ctx.fetch_latest()`: the event's object as it is now, coalesced and rate limited."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from payhook import HandlerContext, hookimpl
from payhook.stripe_api.fetch import Coalescer, RateLimiter
from payhook.testing import MakePayhook, store_backends

PI_SUCCEEDED = "payment_intent.succeeded"


class LatestPlugin:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register(PI_SUCCEEDED, self.handle, name="handle")

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        self.seen.append(ctx.fetch_latest().status)


@store_backends
def test_a_handler_gets_the_objects_current_state_with_its_tenants_key(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    plugin = LatestPlugin()
    harness = make_payhook(
        {"latest": plugin}, tenants={"pycon": {"plugins": ["latest"], "stripe_api_key": "rk_test_latest"}}
    )
    route = stripe_api.get("/v1/payment_intents/pi_latest").mock(
        return_value=httpx.Response(
            200, json={"id": "pi_latest", "object": "payment_intent", "status": "canceled"}
        )
    )
    [run] = harness.send(stripe_event(PI_SUCCEEDED, data__object__id="pi_latest"))
    assert run.status == "succeeded", run.last_error
    assert plugin.seen == ["canceled"]  # not the event's "succeeded"
    assert route.calls.last.request.headers["authorization"] == "Bearer rk_test_latest"


def test_identical_calls_in_flight_are_made_once() -> None:
    coalescer = Coalescer()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(5)
        return "answer"

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(coalescer.call, "key", slow)
        assert started.wait(5)
        others = [pool.submit(coalescer.call, "key", slow) for _ in range(3)]
        time.sleep(0.05)
        release.set()
        assert [f.result(5) for f in [first, *others]] == ["answer"] * 4
    assert len(calls) == 1
    # Once answered, the next call is made afresh; an error reaches every waiter.
    assert coalescer.call("key", lambda: "again") == "again"
    with pytest.raises(KeyError):
        coalescer.call("key", lambda: {}["missing"])


def test_calls_are_held_to_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
    # A burst of 2, then one call every half second.
    assert slept == [pytest.approx(0.5), pytest.approx(0.5)]
