"""For the organiser's application: create orders, and record money paid outside Stripe."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Session

from . import states
from .models import Order, OrderStatus, Payment, PaymentMethod, PaymentStatus

__all__ = ["add_payment", "create_order"]


def create_order(
    session: Session,
    *,
    tenant: str,
    reference: str,
    total: Decimal | str,
    currency: str,
    hold_expires_at: datetime | None = None,
) -> Order:
    """A pending order; put its `id` into the Stripe objects' `metadata.order_id`."""
    order = Order(
        tenant=tenant,
        reference=reference,
        total=Decimal(total),
        currency=currency.lower(),
        hold_expires_at=hold_expires_at,
    )
    session.add(order)
    session.flush()
    return order


def add_payment(session: Session, order: Order, method: PaymentMethod, amount: Decimal | str) -> Payment:
    """A succeeded comp, credit or manual payment; the order is paid once covered.

    The caller commits, and tells other systems itself: `order_paid` is the webhook's hook.
    """
    if method == PaymentMethod.STRIPE:
        raise ValueError("Stripe payments are recorded from Stripe's events")
    if order.id is None:
        session.flush()
    assert order.id is not None
    payment = Payment(
        order_id=order.id,
        method=method,
        status=PaymentStatus.SUCCEEDED,
        amount=Decimal(amount),
        currency=order.currency,
    )
    session.add(payment)
    if order.status == OrderStatus.PENDING and states.amount_paid(session, order) >= order.total:
        states.move(order, OrderStatus.PAID)
    return payment
