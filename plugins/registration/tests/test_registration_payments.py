"""Payment intents through signed deliveries: payments progress, orders get paid once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from payhook import utcnow
from payhook.testing import store_backends
from registration_events import intent_event
from registration_testkit import TENANT, Conference

from payhook_registration.models import Order, PaymentMethod
from payhook_registration.orders import add_payment

pytestmark = store_backends


def test_succeeded_pays_the_order_clears_its_hold_and_fires_order_paid(conference: Conference) -> None:
    order_id = conference.order("20.00", hold_expires_at=utcnow() + timedelta(minutes=15))
    event = intent_event("succeeded", order_id, "pi_paid", amount=2000)

    assert conference.send(event) == "succeeded"

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.method, payment.amount, payment.currency) == (
        "succeeded",
        "stripe",
        Decimal("20.00"),
        "usd",
    )
    assert (payment.stripe_payment_intent_id, payment.stripe_charge_id) == ("pi_paid", "ch_for_pi_paid")
    order = conference.get(order_id)
    assert (order.status, order.hold_expires_at) == ("paid", None)
    assert conference.hooks.paid == [(order_id, "paid", TENANT)]


def test_the_latest_charge_field_of_current_api_versions_is_used(conference: Conference) -> None:
    order_id = conference.order()
    event = intent_event("succeeded", order_id, "pi_new_api", latest_charge="ch_latest")
    del event["data"]["object"]["charges"]

    assert conference.send(event) == "succeeded"
    assert conference.payments(order_id)[0].stripe_charge_id == "ch_latest"


def test_replays_change_nothing_and_order_paid_fires_once(conference: Conference) -> None:
    order_id = conference.order()
    event = intent_event("succeeded", order_id, "pi_replayed")
    conference.send(event)
    before = conference.payments(order_id)

    # Stripe redelivers the same event: the core answers "duplicate" and runs nothing.
    assert conference.harness.deliver(event).json()["status"] == "duplicate"
    # The handler runs again on the same event (as after a crash before the commit)...
    assert conference.rerun(event) == "succeeded"
    # ...and on another event about the same intent.
    copy = intent_event("succeeded", order_id, "pi_replayed")
    assert conference.send(copy) == "succeeded"

    assert conference.payments(order_id) == before
    assert conference.get(order_id).status == "paid"
    assert conference.hooks.paid == [(order_id, "paid", TENANT)]


@pytest.mark.parametrize(
    ("currency", "minor", "total"),
    [
        ("jpy", 5000, "5000"),  # zero-decimal
        ("krw", 55000, "55000"),  # zero-decimal
        ("kwd", 12340, "12.340"),  # three-decimal
        ("bhd", 7250, "7.250"),  # three-decimal
        ("isk", 150000, "1500.00"),  # zero-decimal in ISO 4217, two-decimal in Stripe's API
    ],
)
def test_amounts_use_the_currencys_real_exponent(
    conference: Conference, currency: str, minor: int, total: str
) -> None:
    order_id = conference.order(total, currency)
    conference.send(intent_event("succeeded", order_id, f"pi_{currency}", amount=minor, currency=currency))

    [payment] = conference.payments(order_id)
    assert payment.amount == Decimal(total)
    assert payment.currency == currency
    assert conference.get(order_id).status == "paid"


def test_an_order_is_paid_only_once_its_payments_cover_the_total(conference: Conference) -> None:
    order_id = conference.order("50.00")
    conference.send(intent_event("succeeded", order_id, "pi_first_half", amount=2500))
    assert conference.get(order_id).status == "pending"
    assert conference.hooks.paid == []

    conference.send(intent_event("succeeded", order_id, "pi_second_half", amount=2500))
    assert conference.get(order_id).status == "paid"
    assert len(conference.hooks.paid) == 1


def test_payments_that_add_up_to_the_total_exactly_pay_it(conference: Conference) -> None:
    """3.34 + 0.01 is 3.35, though not in floating point (how SQLite keeps NUMERIC columns)."""
    order_id = conference.order("3.35")
    conference.send(intent_event("succeeded", order_id, "pi_most", amount=334))
    assert conference.get(order_id).status == "pending"

    conference.send(intent_event("succeeded", order_id, "pi_last_cent", amount=1))
    assert conference.get(order_id).status == "paid"
    assert len(conference.hooks.paid) == 1


def test_a_comp_payment_counts_towards_the_total(conference: Conference) -> None:
    order_id = conference.order("50.00")
    with conference.harness.session() as session:
        order = session.get(Order, order_id)
        assert order is not None
        add_payment(session, order, PaymentMethod.COMP, "30.00")
        session.commit()

    conference.send(intent_event("succeeded", order_id, "pi_rest", amount=2000))
    assert conference.get(order_id).status == "paid"


def test_processing_then_succeeded_updates_the_same_payment(conference: Conference) -> None:
    order_id = conference.order()
    assert conference.send(intent_event("processing", order_id, "pi_bank_debit")) == "succeeded"
    [processing] = conference.payments(order_id)
    assert (processing.status, processing.amount) == ("processing", Decimal("20.00"))
    assert conference.get(order_id).status == "pending"

    conference.send(intent_event("succeeded", order_id, "pi_bank_debit"))
    [succeeded] = conference.payments(order_id)
    assert (succeeded.id, succeeded.status) == (processing.id, "succeeded")
    assert conference.get(order_id).status == "paid"


def test_payment_failed_records_the_reason_and_leaves_the_order(conference: Conference) -> None:
    hold = utcnow() + timedelta(minutes=15)
    order_id = conference.order(hold_expires_at=hold)
    event = intent_event("payment_failed", order_id, "pi_declined")
    assert conference.send(event) == "succeeded"

    [payment] = conference.payments(order_id)
    assert payment.status == "failed"
    assert payment.failure_reason == "Your card was declined. (generic_decline)"
    order = conference.get(order_id)
    assert order.status == "pending"
    assert order.hold_expires_at == hold

    conference.rerun(event)
    assert [p.status for p in conference.payments(order_id)] == ["failed"]


def test_canceled_without_error_details_says_so(conference: Conference) -> None:
    order_id = conference.order()
    conference.send(intent_event("canceled", order_id, "pi_abandoned"))

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.failure_reason) == ("failed", "No error details")
    assert conference.get(order_id).status == "pending"


def test_a_failed_payment_can_still_succeed_with_another_card(conference: Conference) -> None:
    order_id = conference.order()
    conference.send(intent_event("payment_failed", order_id, "pi_second_try"))
    conference.send(intent_event("succeeded", order_id, "pi_second_try"))

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.failure_reason) == ("succeeded", None)
    assert conference.get(order_id).status == "paid"


def test_a_failure_never_undoes_a_success(conference: Conference) -> None:
    order_id = conference.order()
    success = intent_event("succeeded", order_id, "pi_done")
    late = intent_event("payment_failed", order_id, "pi_done")
    # Same second: the event timestamps cannot tell which came first, the payment can.
    late["created"] = success["created"]
    conference.send(success)

    assert conference.send(late) == "skipped"
    assert conference.payments(order_id)[0].status == "succeeded"
    assert conference.skipped() == [
        (late["id"], "payment_intent.payment_failed arrived after pi_done's payment succeeded")
    ]


def test_an_older_event_delivered_after_a_newer_one_is_skipped(conference: Conference) -> None:
    order_id = conference.order()
    newer = intent_event("processing", order_id, "pi_ordering")
    older = intent_event("payment_failed", order_id, "pi_ordering")
    newer["created"], older["created"] = 1_700_000_100, 1_700_000_000

    assert conference.send(newer) == "succeeded"
    assert conference.send(older) == "skipped"

    assert conference.payments(order_id)[0].status == "processing"
    assert conference.last_error(older) == "a newer event about pi_ordering was already applied"
