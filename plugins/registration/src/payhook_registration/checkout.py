"""Checkout sessions: a paid session pays its order; an expired one cancels it."""

from __future__ import annotations

from payhook import Event, HandlerContext, Skip, from_minor_units

from . import states
from .lookup import event_object, locate_order, require_currency
from .models import OrderStatus
from .payments import record_success

__all__ = ["session_completed", "session_expired"]


def session_completed(event: Event, ctx: HandlerContext) -> None:
    """A paid session is a succeeded payment of its intent; unpaid ones wait for their money."""
    session = event_object(event)
    if session.get("payment_status") != "paid":
        raise Skip(f"{session['id']} completed with payment_status {session.get('payment_status')!r}")
    tx, order = locate_order(ctx, session)
    require_currency(order, session["currency"], session["id"])
    intent = session.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    if not intent_id:
        raise Skip(f"{session['id']} has no payment intent: nothing was charged")
    record_success(
        tx,
        order,
        intent_id=intent_id,
        charge_id=None,
        amount=from_minor_units(session["amount_total"], session["currency"]),
        currency=session["currency"],
    )


def session_expired(event: Event, ctx: HandlerContext) -> None:
    """The attendee never paid: a still-pending order is cancelled and its hold released."""
    session = event_object(event)
    tx, order = locate_order(ctx, session)
    if order.status == OrderStatus.CANCELLED:
        ctx.logger.info("order %s is already cancelled", order.id)  # a replay
    elif states.can_move(order.status, OrderStatus.CANCELLED):
        tx.move_order(order, OrderStatus.CANCELLED)
    else:
        raise Skip(f"order {order.id} is {order.status}; only a pending order is cancelled")
