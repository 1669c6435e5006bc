"""`ctx.fetch_latest()`: the event's object as it is now, coalesced and rate limited."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import stripe
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


class KeepingPlugin:
    def __init__(self) -> None:
        self.latest: list[stripe.StripeObject] = []

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register(PI_SUCCEEDED, self.handle, name="handle")

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        self.latest.append(ctx.fetch_latest())


def test_the_object_is_the_sdks_class_read_by_attribute_or_key_and_to_dict_gives_a_plain_dict(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    """What docs/hooks.md says `fetch_latest()` returns, and how to read it."""
    plugin = KeepingPlugin()
    harness = make_payhook(
        {"keep": plugin}, tenants={"pycon": {"plugins": ["keep"], "stripe_api_key": "rk_test_latest"}}
    )
    answer = {"id": "pi_latest", "object": "payment_intent", "status": "canceled", "metadata": {"order": "7"}}
    stripe_api.get("/v1/payment_intents/pi_latest").mock(return_value=httpx.Response(200, json=answer))
    [run] = harness.send(stripe_event(PI_SUCCEEDED, data__object__id="pi_latest"))
    assert run.status == "succeeded", run.last_error

    [latest] = plugin.latest
    assert isinstance(latest, stripe.PaymentIntent)  # narrows it for a type checker too
    assert (latest.status, latest["status"], latest.metadata["order"]) == ("canceled", "canceled", "7")
    plain = latest.to_dict()
    assert type(plain) is dict and type(plain["metadata"]) is dict
    assert (plain.get("status"), plain.get("missing", "default")) == ("canceled", "default")
    # Not a dict: the SDK says so, and the type checker knows (a StripeObject has no `get`).
    with pytest.raises(AttributeError, match=r"not a dict\. Use \.to_dict\(\)"):
        latest.get("status")  # type: ignore[attr-defined]


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
