"""Checkout sessions: paid ones pay their order, expired ones cancel it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from payhook import utcnow
from payhook.testing import store_backends
from registration_events import checkout_event, intent_event
from registration_testkit import Conference

pytestmark = store_backends


def test_a_paid_session_pays_the_order(conference: Conference) -> None:
    order_id = conference.order("30.00", hold_expires_at=utcnow() + timedelta(minutes=30))
    event = checkout_event("completed", order_id, "pi_checkout", amount=3000)
    assert conference.send(event) == "succeeded"

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount, payment.stripe_payment_intent_id) == (
        "succeeded",
        Decimal("30.00"),
        "pi_checkout",
    )
    order = conference.get(order_id)
    assert (order.status, order.hold_expires_at) == ("paid", None)
    assert len(conference.hooks.paid) == 1

    # Replays, and the intent's own event, change nothing.
    assert conference.rerun(event) == "succeeded"
    conference.send(intent_event("succeeded", order_id, "pi_checkout", amount=3000))
    assert conference.payments(order_id) == [payment]
    assert len(conference.hooks.paid) == 1


def test_an_unpaid_completed_session_is_skipped_until_its_money_arrives(conference: Conference) -> None:
    order_id = conference.order("30.00")
    unpaid = checkout_event("completed", order_id, "pi_async", amount=3000, payment_status="unpaid")
    assert conference.send(unpaid) == "skipped"
    session_id = unpaid["data"]["object"]["id"]
    assert conference.last_error(unpaid) == f"{session_id} completed with payment_status 'unpaid'"
    assert conference.payments(order_id) == []

    paid = checkout_event("completed", order_id, "pi_async", amount=3000)
    paid["type"] = "checkout.session.async_payment_succeeded"
    conference.send(paid)
    assert conference.get(order_id).status == "paid"


def test_an_expired_session_cancels_a_pending_order_and_clears_its_hold(conference: Conference) -> None:
    order_id = conference.order(hold_expires_at=utcnow() + timedelta(minutes=30))
    event = checkout_event("expired", order_id, None)
    assert conference.send(event) == "succeeded"

    order = conference.get(order_id)
    assert (order.status, order.hold_expires_at) == ("cancelled", None)
    assert conference.rerun(event) == "succeeded"
    assert conference.get(order_id).status == "cancelled"


def test_an_expired_session_leaves_a_paid_order_alone(conference: Conference) -> None:
    order_id = conference.order()
    conference.send(intent_event("succeeded", order_id, "pi_paid_elsewhere"))
    expired = checkout_event("expired", order_id, None)

    assert conference.send(expired) == "skipped"
    assert conference.get(order_id).status == "paid"
    assert conference.last_error(expired) == f"order {order_id} is paid; only a pending order is cancelled"
