"""Finding the order and payment an event is about, and refusing ones that are not ours."""

from __future__ import annotations

from typing import Any

from payhook import Event, GiveUp, HandlerContext, Skip, TenantConfig
from sqlmodel import Session, col, or_, select

from .db import OrderRow, PaymentRow, Tx
from .models import Order, Payment

__all__ = [
    "event_object",
    "load_order",
    "locate_order",
    "order_for_charge",
    "order_id_in",
    "payment_for",
    "require_currency",
]


def event_object(event: Event) -> dict[str, Any]:
    """The event's `data.object` as plain dicts (Stripe objects have no `.get`).

    Read from the parsed payload: building Stripe's objects only to turn them back into dicts
    would cost more than the rest of the handler.
    """
    return dict(event.payload["data"]["object"])


def order_id_in(obj: dict[str, Any]) -> int | None:
    """`metadata.order_id` as an integer; None when it is absent."""
    raw = (obj.get("metadata") or {}).get("order_id")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise GiveUp(f"metadata.order_id {raw!r} of {obj.get('id')} is not an order id") from None


def locate_order(ctx: HandlerContext, obj: dict[str, Any]) -> tuple[Tx, OrderRow]:
    """The order named by `obj`'s `metadata.order_id`, locked for this transaction.

    Skips an object without one (`payhook.Skip`: such events are often not about orders),
    before touching the database; gives up on an order that does not exist or belongs to
    another tenant, never touched.
    """
    order_id = order_id_in(obj)
    if order_id is None:
        raise Skip(f"{obj.get('id')} has no metadata.order_id")
    tx = Tx(ctx)
    return tx, load_order(tx, order_id, f"metadata.order_id of {obj.get('id')}")


def load_order(tx: Tx, order_id: int, source: str) -> OrderRow:
    """The order, locked for this transaction, if it exists and is this tenant's."""
    order = tx.lock_order(order_id)
    if order is None:
        raise GiveUp(f"order {order_id} ({source}) does not exist")
    slug = tx.ctx.tenant.slug
    if order.tenant != slug:
        raise GiveUp(f"order {order_id} ({source}) is not an order of tenant {slug!r}; it was not touched")
    return order


def payment_for(tx: Tx, intent_id: str | None, charge_id: str | None = None) -> PaymentRow | None:
    """The Stripe payment recorded for an intent (or, for charges without one, the charge)."""
    if intent_id:
        return tx.payment_by_intent(intent_id)
    if charge_id:
        return tx.payment_by_charge(charge_id)
    return None


def require_currency(order: OrderRow, currency: str, source: str) -> None:
    if currency.lower() != order.currency.lower():
        raise GiveUp(
            f"currency mismatch: {source} is in {currency.upper()}, "
            f"order {order.id} is in {order.currency.upper()}; nothing was recorded"
        )


def order_for_charge(
    session: Session, tenant: TenantConfig, charge_id: str | None, payment_intent_id: str | None
) -> Order | None:
    """The tenant's order a Stripe charge (or its intent) paid for, if this plugin knows it."""
    matches = []
    if payment_intent_id:
        matches.append(col(Payment.stripe_payment_intent_id) == payment_intent_id)
    if charge_id:
        matches.append(col(Payment.stripe_charge_id) == charge_id)
    if not matches:
        return None
    query = (
        select(Order)
        .join(Payment, col(Payment.order_id) == col(Order.id))
        .where(Order.tenant == tenant.slug, or_(*matches))
    )
    return session.exec(query).first()
