"""Payment intents: a payment's progress, and the order it pays for getting paid."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from payhook import Event, GiveUp, HandlerContext, RetryLater, Skip, from_minor_units

from .db import OrderRow, PaymentRow, Tx
from .lookup import event_object, locate_order, payment_for, require_currency
from .models import OrderStatus, PaymentStatus

__all__ = ["intent_failed", "intent_processing", "intent_succeeded", "record_success"]

_DONE = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)


def intent_succeeded(event: Event, ctx: HandlerContext) -> None:
    """The intent's payment succeeded with `amount_received`; the order may now be paid."""
    intent = event_object(event)
    tx, order = locate_order(ctx, intent)
    require_currency(order, intent["currency"], intent["id"])
    record_success(
        tx,
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
    tx: Tx,
    order: OrderRow,
    *,
    intent_id: str | None,
    charge_id: str | None,
    amount: Decimal,
    currency: str,
) -> PaymentRow:
    """Mark the intent's payment succeeded (creating it if needed), then settle the order.

    A payment that already succeeded is left exactly as it is: replays change nothing.
    """
    payment, added = _add_or_find(
        tx, order, intent_id, charge_id, PaymentStatus.SUCCEEDED, amount, currency.lower()
    )
    if not added:
        if payment.status in _DONE:
            tx.ctx.logger.info(
                "payment for %s is already %s; nothing to do", intent_id or charge_id, payment.status
            )
            return payment
        tx.payment_succeeded(payment, amount, currency.lower(), charge_id or None)
    _settle(tx, order, f"payment {intent_id or charge_id}")
    return payment


def _settle(tx: Tx, order: OrderRow, what: str) -> None:
    ctx = tx.ctx
    if order.status == OrderStatus.PENDING:
        if tx.pay_if_covered(order):
            _after_commit_tell(ctx, "order_paid", order, tenant=ctx.tenant)
        return
    # Money for an order that cannot take it: keep the record, never revive the order.
    reason = (
        f"{what} succeeded for order {order.id} ({order.reference}), which is {order.status}; "
        "the payment was recorded and the order left unchanged"
    )
    ctx.logger.warning(reason)
    _after_commit_tell(ctx, "order_needs_attention", order, reason=reason)


def _after_commit_tell(ctx: HandlerContext, hook: str, order: OrderRow, **kwargs: Any) -> None:
    """Call the hook once committed, with the order as committed (see hookspecs)."""
    caller = getattr(ctx.hook, hook)
    listeners = getattr(caller, "get_hookimpls", None)
    if listeners is not None and not listeners():
        return  # no plugin of this tenant listens: no snapshot to build
    ctx.after_commit(lambda: caller(order=order.snapshot(), **kwargs))


def _progress(event: Event, ctx: HandlerContext, status: PaymentStatus) -> None:
    intent = event_object(event)
    tx, order = locate_order(ctx, intent)
    require_currency(order, intent["currency"], intent["id"])
    if ctx.newer_event_applied():
        raise Skip(f"a newer event about {intent['id']} was already applied")
    reason = failure_reason(intent) if status == PaymentStatus.FAILED else None
    amount = from_minor_units(intent["amount"], intent["currency"])
    payment, added = _add_or_find(
        tx, order, intent["id"], None, status, amount, intent["currency"].lower(), reason
    )
    if added:
        return
    if payment.status in _DONE:
        raise Skip(f"{event.type} arrived after {intent['id']}'s payment {payment.status}")
    tx.payment_progressed(payment, status, reason)


def _add_or_find(
    tx: Tx,
    order: OrderRow,
    intent_id: str | None,
    charge_id: str | None,
    status: PaymentStatus,
    amount: Decimal,
    currency: str,
    failure_reason: str | None = None,
) -> tuple[PaymentRow, bool]:
    """A new payment with these values (True), or the one recorded for the intent (False).

    The recorded one is left as it is, and must be this order's.
    """
    if not intent_id:
        # No intent to be unique on: an earlier event about the charge may have recorded it.
        recorded = _own_payment(tx, order, None, charge_id)
        if recorded is not None:
            return recorded, False
    added = tx.add_payment(
        order,
        intent_id=intent_id or None,
        charge_id=charge_id or None,
        status=status,
        amount=amount,
        currency=currency,
        failure_reason=failure_reason,
    )
    if added is not None:
        return added, True
    recorded = _own_payment(tx, order, intent_id, None)
    if recorded is None:
        # The insert met a payment for the intent that this statement cannot see; cannot
        # happen on SQLite (one writer) nor in PostgreSQL's READ COMMITTED, where the next
        # statement sees what the insert waited for.
        raise RetryLater(f"the payment for {intent_id} could not be read back", delay=1.0)
    return recorded, False


def _own_payment(tx: Tx, order: OrderRow, intent_id: str | None, charge_id: str | None) -> PaymentRow | None:
    payment = payment_for(tx, intent_id, charge_id)
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
