"""The plugin's tables: orders and their payments."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from payhook import UTCDateTime, utcnow
from sqlalchemy import Column, Numeric, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["Order", "OrderStatus", "Payment", "PaymentMethod", "PaymentStatus"]

# Three decimal places hold every currency Stripe charges in (KWD, BHD, ...).
MONEY = Numeric(18, 3)


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


class PaymentMethod(StrEnum):
    STRIPE = "stripe"
    COMP = "comp"
    CREDIT = "credit"
    MANUAL = "manual"


def _money(default: Decimal | None = None) -> Any:
    return Field(default=default, sa_column=Column(MONEY, nullable=False))


def _time(*, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Order(SQLModel, table=True):
    """What an attendee owes; the organiser's application creates it (see `create_order`)."""

    __tablename__ = "registration_order"
    __table_args__ = (UniqueConstraint("tenant", "reference", name="uq_registration_order_tenant_reference"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64, index=True)
    reference: str = Field(max_length=100)
    status: str = Field(default=OrderStatus.PENDING, max_length=32)
    total: Decimal = _money()
    currency: str = Field(max_length=3)
    # Seats held for an unpaid order are released by the organiser's app after this.
    hold_expires_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Payment(SQLModel, table=True):
    """Money towards an order: a Stripe payment intent, or a comp, credit or manual entry."""

    __tablename__ = "registration_payment"

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="registration_order.id", index=True)
    method: str = Field(default=PaymentMethod.STRIPE, max_length=16)
    status: str = Field(default=PaymentStatus.PENDING, max_length=16)
    amount: Decimal = _money()
    amount_refunded: Decimal = _money(Decimal(0))
    currency: str = Field(max_length=3)
    # Unique: one payment per intent, so two handlers racing on one intent cannot both insert.
    stripe_payment_intent_id: str | None = Field(default=None, max_length=255, unique=True, index=True)
    stripe_charge_id: str | None = Field(default=None, max_length=255, index=True)
    failure_reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _time()
