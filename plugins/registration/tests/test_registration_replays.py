"""Every event type, replayed three ways, has exactly the effect of its first delivery."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from payhook.testing import fresh_event_id, store_backends
from registration_events import checkout_event, intent_event, refund_event
from registration_testkit import Conference

pytestmark = store_backends

Scenario = Callable[[Conference, int], dict[str, Any]]


def paid_then(make: Callable[[int], dict[str, Any]]) -> Scenario:
    """Pay the order with pi_replay first, then hand back the event under test."""

    def scenario(conference: Conference, order_id: int) -> dict[str, Any]:
        conference.send(intent_event("succeeded", order_id, "pi_replay"))
        return make(order_id)

    return scenario


SCENARIOS: dict[str, Scenario] = {
    "succeeded": lambda c, order: intent_event("succeeded", order, "pi_replay"),
    "processing": lambda c, order: intent_event("processing", order, "pi_replay"),
    "payment_failed": lambda c, order: intent_event("payment_failed", order, "pi_replay"),
    "canceled": lambda c, order: intent_event("canceled", order, "pi_replay"),
    "partial-refund": paid_then(lambda order: refund_event(order, "pi_replay", refunded=500)),
    "full-refund": paid_then(lambda order: refund_event(order, "pi_replay", refunded=2000)),
    "refund-first": lambda c, order: refund_event(order, "pi_replay", refunded=500),
    "checkout-completed": lambda c, order: checkout_event("completed", order, "pi_replay"),
    "checkout-expired": lambda c, order: checkout_event("expired", order, None),
    "no-order-id": lambda c, order: intent_event("succeeded", None, "pi_replay"),
}


def state(conference: Conference, order_id: int) -> tuple[Any, ...]:
    order = conference.get(order_id)
    payments = [
        (
            p.stripe_payment_intent_id,
            p.status,
            p.amount,
            p.amount_refunded,
            p.stripe_charge_id,
            p.failure_reason,
        )
        for p in conference.payments()
    ]
    hooks = (list(conference.hooks.paid), list(conference.hooks.attention))
    return (order.status, order.hold_expires_at, payments, hooks)


# What the first delivery's run ends as; every replay of it ends the same way.
SKIPPED = {"no-order-id"}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_replays_have_no_further_effect(conference: Conference, scenario: str) -> None:
    order_id = conference.order("20.00")
    event = SCENARIOS[scenario](conference, order_id)
    outcome = "skipped" if scenario in SKIPPED else "succeeded"
    assert conference.send(event) == outcome
    first = state(conference, order_id)

    # 1. Stripe redelivers it: a duplicate, nothing runs.
    assert conference.harness.deliver(event).json()["status"] == "duplicate"
    # 2. The core runs the handler again on the same event (a crash before the commit).
    assert conference.rerun(event) == outcome
    assert state(conference, order_id) == first
    # 3. Another event with the same object (Stripe sends one per change, some alike).
    again = copy.deepcopy(event)
    again["id"] = fresh_event_id()
    assert conference.send(again) == outcome
    assert state(conference, order_id) == first
    assert conference.harness.failures() == []
