"""`charge.refunded`: how much of a payment went back, and what that makes of its order."""

from __future__ import annotations

from typing import Any

from payhook import Event, GiveUp, HandlerContext, Skip, from_minor_units, quantize

from . import states
from .db import OrderRow, PaymentRow, Tx
from .lookup import event_object, load_order, order_id_in, payment_for, require_currency
from .models import OrderStatus, PaymentStatus
from .payments import record_success

__all__ = ["charge_refunded"]


def charge_refunded(event: Event, ctx: HandlerContext) -> None:
    """Record the charge's cumulative `amount_refunded`; full -> refunded, else partially.

    Stripe reports the running total, so replays and out-of-order deliveries cannot
    double count: an amount at or below the recorded one changes nothing.
    """
    charge = event_object(event)
    currency = charge["currency"]
    intent_id = _id(charge.get("payment_intent"))
    tx = Tx(ctx)
    order, payment = _locate(tx, charge, intent_id)
    require_currency(order, currency, charge["id"])
    if payment is None or payment.status not in (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED):
        # A refunded charge was captured. Record that first, as payment_intent.succeeded
        # would have, so the outcome does not depend on which event arrived first.
        captured = charge.get("amount_captured", charge["amount"])
        payment = record_success(
            tx,
            order,
            intent_id=intent_id,
            charge_id=charge["id"],
            amount=from_minor_units(captured, currency),
            currency=currency,
        )
    refunded = from_minor_units(charge["amount_refunded"], currency)
    if refunded < payment.amount_refunded:
        recorded = quantize(payment.amount_refunded, currency)
        raise Skip(f"{charge['id']} refunded {refunded}, less than the {recorded} recorded")
    if refunded == payment.amount_refunded:
        ctx.logger.info("refund of %s %s on %s already recorded", refunded, currency, charge["id"])
        return
    tx.payment_refunded(payment, refunded)
    # A refund on an order that was never paid (or was cancelled) leaves its status alone.
    if order.status in (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED):
        new = states.refund_status_of(*tx.captured(order))
        if new is not None and states.can_move(order.status, new):
            tx.move_order(order, new)


def _locate(tx: Tx, charge: dict[str, Any], intent_id: str | None) -> tuple[OrderRow, PaymentRow | None]:
    # Stripe copies an intent's metadata onto its charges; older charges may lack it,
    # and then the payment recorded for the intent leads to the order.
    order_id = order_id_in(charge)
    if order_id is not None:
        order = load_order(tx, order_id, f"metadata.order_id of {charge['id']}")
        payment = payment_for(tx, intent_id, charge["id"])
        if payment is not None and payment.order_id != order.id:
            raise GiveUp(
                f"the payment for {intent_id or charge['id']} belongs to order {payment.order_id}, "
                f"but {charge['id']} names order {order.id}; nothing was recorded"
            )
        return order, payment
    found = payment_for(tx, intent_id, charge["id"])
    if found is None:
        raise Skip(f"{charge['id']} has no metadata.order_id and pays for no recorded payment")
    order = load_order(tx, found.order_id, f"order of the payment for {intent_id or charge['id']}")
    # Read again under the order's lock: another run may have changed it meanwhile.
    return order, payment_for(tx, intent_id, charge["id"])


def _id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else value
