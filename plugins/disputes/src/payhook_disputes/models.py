"""`disputes_dispute`: one row per Stripe dispute and tenant, kept at its latest state."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from payhook import UTCDateTime, utcnow
from sqlalchemy import Column, Numeric, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["CLOSED_STATUSES", "Dispute"]

# Stripe's final dispute statuses; a dispute in one of these never reopens.
CLOSED_STATUSES = frozenset({"won", "lost", "warning_closed", "charge_refunded", "prevented"})


def _time(*, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class Dispute(SQLModel, table=True):
    __tablename__ = "disputes_dispute"
    # Per tenant: two tenants on one Stripe account both receive (and keep) the dispute.
    __table_args__ = (UniqueConstraint("tenant", "stripe_dispute_id", name="uq_disputes_dispute_tenant_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64, index=True)
    stripe_dispute_id: str = Field(max_length=255)
    charge_id: str = Field(max_length=255, index=True)
    payment_intent_id: str | None = Field(default=None, max_length=255)
    amount: Decimal = Field(sa_column=Column(Numeric(18, 3), nullable=False))
    currency: str = Field(max_length=3)
    reason: str = Field(max_length=64)
    status: str = Field(max_length=64)
    evidence_due_by: datetime | None = _time(nullable=True)
    # The disputed order, when an order-keeping plugin (payhook-registration) knows it.
    order_id: int | None = Field(default=None, index=True)
    order_reference: str | None = Field(default=None, max_length=100)
    created_at: datetime = _time()
    updated_at: datetime = _time()
