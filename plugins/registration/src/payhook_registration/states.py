"""The only ways an order's status may change, and what its payments add up to.

Orders move forward along pending -> paid -> partially_refunded -> refunded (steps may
be skipped, never undone), or from pending to cancelled. Nothing leaves cancelled or
refunded: a late or replayed event can never revive an order.
"""

from __future__ import annotations

from decimal import Decimal

from payhook import utcnow
from sqlmodel import Session, select

from .models import Order, OrderStatus, Payment, PaymentStatus

__all__ = ["amount_paid", "can_move", "move", "refund_status", "refund_status_of"]

_PROGRESS = {
    OrderStatus.PENDING: 0,
    OrderStatus.PAID: 1,
    OrderStatus.PARTIALLY_REFUNDED: 2,
    OrderStatus.REFUNDED: 3,
}

# Payments whose money arrived (a refunded payment did arrive, and some of it went back).
_CAPTURED = (PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED)


def can_move(current: str, new: OrderStatus) -> bool:
    if new == OrderStatus.CANCELLED:
        return current == OrderStatus.PENDING
    if current == OrderStatus.CANCELLED:
        return False
    return _PROGRESS[new] > _PROGRESS[OrderStatus(current)]


def move(order: Order, new: OrderStatus) -> bool:
    """Change the order's status if the rules allow it; True when it changed."""
    if not can_move(order.status, new):
        return False
    order.status = new
    order.updated_at = utcnow()
    if new in (OrderStatus.PAID, OrderStatus.CANCELLED):
        order.hold_expires_at = None
    return True


def _payments(session: Session, order: Order) -> list[Payment]:
    session.flush()
    return list(session.exec(select(Payment).where(Payment.order_id == order.id)))


def amount_paid(session: Session, order: Order) -> Decimal:
    """What the order's payments brought in, net of refunds."""
    return sum(
        (p.amount - p.amount_refunded for p in _payments(session, order) if p.status in _CAPTURED),
        Decimal(0),
    )


def refund_status(session: Session, order: Order) -> OrderStatus | None:
    """`refunded` when everything paid went back, `partially_refunded` when some did."""
    payments = [p for p in _payments(session, order) if p.status in _CAPTURED]
    received = sum((p.amount for p in payments), Decimal(0))
    refunded = sum((p.amount_refunded for p in payments), Decimal(0))
    return refund_status_of(received, refunded)


def refund_status_of(received: Decimal, refunded: Decimal) -> OrderStatus | None:
    """The same, from what the order's captured payments brought in and gave back."""
    if refunded <= 0:
        return None
    return OrderStatus.REFUNDED if refunded >= received else OrderStatus.PARTIALLY_REFUNDED
