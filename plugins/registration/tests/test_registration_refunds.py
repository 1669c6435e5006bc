"""`charge.refunded`: cumulative amounts, full and partial, in any order, never twice."""

from __future__ import annotations

from decimal import Decimal

from payhook.testing import store_backends
from registration_events import intent_event, refund_event
from registration_testkit import TENANT, Conference

pytestmark = store_backends


def paid_order(conference: Conference, intent_id: str, total: str = "20.00", amount: int = 2000) -> int:
    order_id = conference.order(total)
    conference.send(intent_event("succeeded", order_id, intent_id, amount=amount))
    return order_id


def test_a_full_refund_refunds_the_payment_and_the_order(conference: Conference) -> None:
    order_id = paid_order(conference, "pi_full")
    assert conference.send(refund_event(order_id, "pi_full", refunded=2000)) == "succeeded"

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount_refunded) == ("refunded", Decimal("20.00"))
    assert conference.get(order_id).status == "refunded"


def test_a_partial_refund_leaves_the_payment_and_partially_refunds_the_order(conference: Conference) -> None:
    order_id = paid_order(conference, "pi_partial")
    conference.send(refund_event(order_id, "pi_partial", refunded=500))

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount_refunded) == ("succeeded", Decimal("5.00"))
    assert conference.get(order_id).status == "partially_refunded"

    # A second refund: Stripe reports the running total on the charge.
    conference.send(refund_event(order_id, "pi_partial", refunded=2000))
    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount_refunded) == ("refunded", Decimal("20.00"))
    assert conference.get(order_id).status == "refunded"


def test_replayed_refunds_never_double_count(conference: Conference) -> None:
    order_id = paid_order(conference, "pi_replay")
    event = refund_event(order_id, "pi_replay", refunded=700)
    conference.send(event)

    assert conference.harness.deliver(event).json()["status"] == "duplicate"
    assert conference.rerun(event) == "succeeded"
    assert conference.send(refund_event(order_id, "pi_replay", refunded=700)) == "succeeded"

    [payment] = conference.payments(order_id)
    assert payment.amount_refunded == Decimal("7.00")
    assert conference.get(order_id).status == "partially_refunded"


def test_an_older_refund_total_arriving_late_changes_nothing(conference: Conference) -> None:
    order_id = paid_order(conference, "pi_late")
    conference.send(refund_event(order_id, "pi_late", refunded=2000))
    late = refund_event(order_id, "pi_late", refunded=500)
    assert conference.send(late) == "skipped"

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount_refunded) == ("refunded", Decimal("20.00"))
    assert conference.get(order_id).status == "refunded"
    assert conference.last_error(late) == "ch_for_pi_late refunded 5.00, less than the 20.00 recorded"


def test_refunds_in_zero_and_three_decimal_currencies(conference: Conference) -> None:
    yen = conference.order("5000", "jpy")
    conference.send(intent_event("succeeded", yen, "pi_yen", amount=5000, currency="jpy"))
    conference.send(refund_event(yen, "pi_yen", amount=5000, refunded=1500, currency="jpy"))
    dinar = conference.order("12.340", "kwd")
    conference.send(intent_event("succeeded", dinar, "pi_dinar", amount=12340, currency="kwd"))
    conference.send(refund_event(dinar, "pi_dinar", amount=12340, refunded=12340, currency="kwd"))

    assert conference.payments(yen)[0].amount_refunded == Decimal("1500")
    assert conference.get(yen).status == "partially_refunded"
    assert conference.payments(dinar)[0].amount_refunded == Decimal("12.340")
    assert conference.get(dinar).status == "refunded"


def test_a_refund_found_through_the_payment_when_the_charge_has_no_order_id(conference: Conference) -> None:
    order_id = paid_order(conference, "pi_no_metadata")
    conference.send(refund_event(None, "pi_no_metadata", refunded=2000))
    assert conference.get(order_id).status == "refunded"


def test_a_refund_arriving_before_the_payment_succeeded(conference: Conference) -> None:
    """The refunded charge proves the capture: the outcome matches in-order delivery."""
    order_id = conference.order("20.00")
    conference.send(intent_event("processing", order_id, "pi_refund_first"))

    assert conference.send(refund_event(order_id, "pi_refund_first", refunded=500)) == "succeeded"
    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount, payment.amount_refunded) == (
        "succeeded",
        Decimal("20.00"),
        Decimal("5.00"),
    )
    assert payment.stripe_charge_id == "ch_for_pi_refund_first"
    assert conference.get(order_id).status == "partially_refunded"
    assert conference.hooks.paid == [(order_id, "partially_refunded", TENANT)]

    # The late payment_intent.succeeded finds the payment already succeeded.
    assert conference.send(intent_event("succeeded", order_id, "pi_refund_first")) == "succeeded"
    assert conference.payments(order_id) == [payment]
    assert conference.get(order_id).status == "partially_refunded"
    assert len(conference.hooks.paid) == 1


def test_a_full_refund_before_any_payment_event(conference: Conference) -> None:
    order_id = conference.order("20.00")
    conference.send(refund_event(order_id, "pi_only_refund", refunded=2000))

    [payment] = conference.payments(order_id)
    assert (payment.status, payment.amount_refunded) == ("refunded", Decimal("20.00"))
    assert conference.get(order_id).status == "refunded"


def test_a_refund_of_an_unpaid_order_leaves_its_status(conference: Conference) -> None:
    order_id = conference.order("50.00")
    conference.send(intent_event("succeeded", order_id, "pi_deposit", amount=2000))
    conference.send(refund_event(order_id, "pi_deposit", refunded=2000))

    assert conference.payments(order_id)[0].status == "refunded"
    assert conference.get(order_id).status == "pending"


def test_a_refund_of_an_unknown_charge_is_skipped(conference: Conference) -> None:
    event = refund_event(None, "pi_not_ours", refunded=2000)
    assert conference.send(event) == "skipped"
    assert conference.last_error(event) == (
        "ch_for_pi_not_ours has no metadata.order_id and pays for no recorded payment"
    )
    assert conference.payments() == []
