"""What the original webhook module lacked: each guard rail, through real deliveries."""

from __future__ import annotations

from decimal import Decimal

import pytest
from payhook.testing import store_backends
from registration_events import checkout_event, intent_event, refund_event
from registration_testkit import OTHER, TENANT, Conference

pytestmark = store_backends


def test_an_event_without_order_id_is_skipped_with_its_reason(conference: Conference) -> None:
    order_id = conference.order()
    event = intent_event("succeeded", None, "pi_anonymous")

    # Recorded as skipped with its reason: a decision, not an error to retry.
    assert conference.send(event) == "skipped"
    assert conference.last_error(event) == "pi_anonymous has no metadata.order_id"
    assert conference.skipped() == [(event["id"], "pi_anonymous has no metadata.order_id")]
    [run] = conference.harness.runs(event["id"])
    assert (run.plugin, run.attempts, run.next_attempt_at) == ("registration", 1, None)
    assert conference.harness.failures() == []
    assert conference.payments() == []
    assert conference.get(order_id).status == "pending"
    assert conference.hooks.paid == []

    # Not retried by the worker; re-run on purpose, it skips again, still without a failure.
    assert conference.harness.process(include_scheduled=True) == []
    assert conference.rerun(event) == "skipped"
    assert conference.skipped() == [(event["id"], "pi_anonymous has no metadata.order_id")]
    assert conference.harness.failures() == []


def test_another_tenants_order_is_never_touched(conference: Conference) -> None:
    theirs = conference.order(tenant=OTHER)
    event = intent_event("succeeded", theirs, "pi_cross_tenant")

    assert conference.send(event, tenant=TENANT) == "dead"
    assert conference.last_error(event) == (
        f"order {theirs} (metadata.order_id of pi_cross_tenant) is not an order of tenant "
        f"'{TENANT}'; it was not touched"
    )
    assert conference.payments() == []
    assert conference.get(theirs).status == "pending"
    assert conference.hooks.paid == []


@pytest.mark.parametrize(
    "make",
    [
        lambda order: refund_event(order, "pi_x", refunded=2000),
        lambda order: checkout_event("expired", order, None),
        lambda order: intent_event("payment_failed", order, "pi_x"),
    ],
    ids=["refund", "checkout-expired", "payment-failed"],
)
def test_no_event_type_reaches_another_tenants_order(conference: Conference, make: object) -> None:
    theirs = conference.order(tenant=OTHER)
    event = make(theirs)  # type: ignore[operator]
    assert conference.send(event, tenant=TENANT) == "dead"
    assert conference.get(theirs).status == "pending"
    assert conference.payments() == []


def test_an_order_that_does_not_exist_is_dead_with_a_reason(conference: Conference) -> None:
    event = intent_event("succeeded", 4242, "pi_ghost")
    assert conference.send(event) == "dead"
    assert conference.last_error(event) == "order 4242 (metadata.order_id of pi_ghost) does not exist"


def test_an_order_id_that_is_not_a_number_is_dead_with_a_reason(conference: Conference) -> None:
    event = intent_event("succeeded", None, "pi_bad_id")
    event["data"]["object"]["metadata"] = {"order_id": "REG-7"}
    assert conference.send(event) == "dead"
    assert conference.last_error(event) == "metadata.order_id 'REG-7' of pi_bad_id is not an order id"


def test_a_currency_mismatch_is_dead_and_records_nothing(conference: Conference) -> None:
    order_id = conference.order("20.00", "eur")
    event = intent_event("succeeded", order_id, "pi_dollars", currency="usd")

    assert conference.send(event) == "dead"
    assert conference.last_error(event) == (
        f"currency mismatch: pi_dollars is in USD, order {order_id} is in EUR; nothing was recorded"
    )
    assert conference.payments() == []
    assert conference.get(order_id).status == "pending"


@pytest.mark.parametrize("status", ["cancelled", "refunded"])
def test_a_payment_for_a_closed_order_is_recorded_but_never_revives_it(
    conference: Conference, status: str
) -> None:
    order_id = conference.order()
    if status == "cancelled":
        conference.send(checkout_event("expired", order_id, None))
    else:
        conference.send(intent_event("succeeded", order_id, "pi_first"))
        conference.send(refund_event(order_id, "pi_first", refunded=2000))
    paid_before = list(conference.hooks.paid)

    event = intent_event("succeeded", order_id, "pi_late_money")
    assert conference.send(event) == "succeeded"

    late = [p for p in conference.payments(order_id) if p.stripe_payment_intent_id == "pi_late_money"]
    assert [(p.status, p.amount) for p in late] == [("succeeded", Decimal("20.00"))]
    assert conference.get(order_id).status == status
    assert conference.hooks.paid == paid_before
    [(attention_id, attention_status, reason)] = conference.hooks.attention
    assert (attention_id, attention_status) == (order_id, status)
    assert reason.startswith(
        f"payment pi_late_money succeeded for order {order_id} (pycon-1), which is {status}"
    )

    # Replayed: still recorded once, and nobody is asked twice.
    conference.rerun(event)
    assert len(conference.hooks.attention) == 1


def test_a_second_payment_for_a_paid_order_needs_attention(conference: Conference) -> None:
    order_id = conference.order()
    conference.send(intent_event("succeeded", order_id, "pi_once"))
    conference.send(intent_event("succeeded", order_id, "pi_twice"))

    assert conference.get(order_id).status == "paid"
    assert len(conference.hooks.paid) == 1
    assert [reason for _, _, reason in conference.hooks.attention] == [
        f"payment pi_twice succeeded for order {order_id} (pycon-1), which is paid; "
        "the payment was recorded and the order left unchanged"
    ]


def test_an_intent_recorded_for_one_order_cannot_be_claimed_by_another(conference: Conference) -> None:
    first, second = conference.order(), conference.order()
    conference.send(intent_event("processing", first, "pi_shared"))
    event = intent_event("succeeded", second, "pi_shared")

    assert conference.send(event) == "dead"
    assert "belongs to order" in conference.last_error(event)
    assert conference.get(second).status == "pending"
