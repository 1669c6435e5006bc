"""Payment intents: a payment's progress, and the order it pays for getting paid."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from payhook import Event, GiveUp, HandlerContext, Skip, from_minor_units

from . import states
from .lookup import event_object, locate_order, payment_for, require_currency
from .models import Order, OrderStatus, Payment, PaymentStatus

__all__ = ["intent_failed", "intent_processing", "intent_succeeded", "record_success"]

_DONE = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)


def intent_succeeded(event: Event, ctx: HandlerContext) -> None:
    """The intent's payment succeeded with `amount_received`; the order may now be paid."""
    intent = event_object(event)
    order = locate_order(ctx, intent)
    require_currency(order, intent["currency"], intent["id"])
    record_success(
        ctx,
        order,
        intent_id=intent["id"],
        charge_id=latest_charge(intent),
        amount=from_minor_units(intent["amount_received"], intent["currency"]),
        currency=intent["currency"],
    )


def intent_processing(event: Event, ctx: HandlerContext) -> None:
    """The payment is under way (bank debits take days); the order waits."""
    _progress(event, ctx, PaymentStatus.PROCESSING)


def intent_failed(event: Event, ctx: HandlerContext) -> None:
    """`payment_failed` and `canceled`: the payment failed; the order is left as it is."""
    _progress(event, ctx, PaymentStatus.FAILED)


def record_success(
    ctx: HandlerContext,
    order: Order,
    *,
    intent_id: str | None,
    charge_id: str | None,
    amount: Decimal,
    currency: str,
) -> Payment:
    """Mark the intent's payment succeeded (creating it if needed), then settle the order.

    A payment that already succeeded is left exactly as it is: replays change nothing.
    """
    payment = _own_payment(ctx, order, intent_id, charge_id)
    if payment is not None and payment.status in _DONE:
        ctx.logger.info("payment for %s is already %s; nothing to do", intent_id or charge_id, payment.status)
        return payment
    if payment is None:
        payment = _new_payment(ctx, order, intent_id, amount, currency)
    payment.status = PaymentStatus.SUCCEEDED
    payment.amount = amount
    payment.currency = currency.lower()
    payment.stripe_charge_id = charge_id or payment.stripe_charge_id
    payment.failure_reason = None
    _settle(ctx, order, f"payment {intent_id or charge_id}")
    return payment


def _settle(ctx: HandlerContext, order: Order, what: str) -> None:
    if order.status == OrderStatus.PENDING:
        covered = states.amount_paid(ctx.session, order) >= order.total
        if covered and states.move(order, OrderStatus.PAID):
            ctx.after_commit(ctx.hook.order_paid, order=order, tenant=ctx.tenant)
        return
    # Money for an order that cannot take it: keep the record, never revive the order.
    reason = (
        f"{what} succeeded for order {order.id} ({order.reference}), which is {order.status}; "
        "the payment was recorded and the order left unchanged"
    )
    ctx.logger.warning(reason)
    ctx.after_commit(ctx.hook.order_needs_attention, order=order, reason=reason)


def _progress(event: Event, ctx: HandlerContext, status: PaymentStatus) -> None:
    intent = event_object(event)
    order = locate_order(ctx, intent)
    require_currency(order, intent["currency"], intent["id"])
    if ctx.newer_event_applied():
        raise Skip(f"a newer event about {intent['id']} was already applied")
    payment = _own_payment(ctx, order, intent["id"], None)
    if payment is not None and payment.status in _DONE:
        raise Skip(f"{event.type} arrived after {intent['id']}'s payment {payment.status}")
    if payment is None:
        amount = from_minor_units(intent["amount"], intent["currency"])
        payment = _new_payment(ctx, order, intent["id"], amount, intent["currency"])
    payment.status = status
    payment.failure_reason = failure_reason(intent) if status == PaymentStatus.FAILED else None


def _new_payment(
    ctx: HandlerContext, order: Order, intent_id: str | None, amount: Decimal, currency: str
) -> Payment:
    assert order.id is not None  # loaded from the database
    payment = Payment(
        order_id=order.id, stripe_payment_intent_id=intent_id, amount=amount, currency=currency.lower()
    )
    ctx.session.add(payment)
    return payment


def _own_payment(
    ctx: HandlerContext, order: Order, intent_id: str | None, charge_id: str | None
) -> Payment | None:
    payment = payment_for(ctx.session, intent_id, charge_id)
    if payment is not None and payment.order_id != order.id:
        raise GiveUp(
            f"the payment for {intent_id or charge_id} belongs to order {payment.order_id}, "
            f"but the event names order {order.id}; nothing was recorded"
        )
    return payment


def latest_charge(intent: dict[str, Any]) -> str | None:
    """The intent's latest charge id, from any API version."""
    charge = intent.get("latest_charge")
    if isinstance(charge, dict):  # expanded
        charge = charge.get("id")
    if charge:
        return str(charge)
    # Before API version 2022-08-01 an intent lists its charges instead, newest first.
    charges = (intent.get("charges") or {}).get("data") or []
    return str(charges[0]["id"]) if charges else None


def failure_reason(intent: dict[str, Any]) -> str:
    error = intent.get("last_payment_error") or {}
    message, code = error.get("message"), error.get("decline_code") or error.get("code")
    if message and code:
        return f"{message} ({code})"
    return str(message or code or "No error details")
