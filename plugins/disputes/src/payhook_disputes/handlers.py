"""`charge.dispute.*`: keep each dispute at its latest state and link it to its order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from payhook import Event, HandlerContext, from_minor_units, utcnow
from sqlmodel import select

from .models import CLOSED_STATUSES, Dispute

__all__ = ["record_dispute"]


def record_dispute(event: Event, ctx: HandlerContext) -> None:
    """Create or update the tenant's row for the dispute; `dispute_opened` fires on creation."""
    data: dict[str, Any] = event.data.object.to_dict()
    if ctx.newer_event_applied():
        ctx.logger.info("%s is older than an event already applied to %s; ignored", event.id, data["id"])
        return
    dispute = ctx.session.exec(
        select(Dispute)
        .where(Dispute.tenant == ctx.tenant.slug, Dispute.stripe_dispute_id == data["id"])
        .with_for_update()
    ).first()
    if dispute is not None and dispute.status in CLOSED_STATUSES and data["status"] not in CLOSED_STATUSES:
        ctx.logger.info(
            "dispute %s is already %s; a %r update is stale", data["id"], dispute.status, data["status"]
        )
        return
    opened = dispute is None
    if dispute is None:
        dispute = Dispute(tenant=ctx.tenant.slug, stripe_dispute_id=data["id"], **_values(data))
    else:
        for name, value in _values(data).items():
            setattr(dispute, name, value)
    if dispute.order_id is None:
        _link_order(ctx, dispute)
    ctx.session.add(dispute)
    if opened:
        ctx.after_commit(ctx.hook.dispute_opened, dispute=dispute, tenant=ctx.tenant)


def _values(data: dict[str, Any]) -> dict[str, Any]:
    due_by = (data.get("evidence_details") or {}).get("due_by")
    return {
        "charge_id": _id(data["charge"]),
        "payment_intent_id": _id(data.get("payment_intent")),
        "amount": from_minor_units(data["amount"], data["currency"]),
        "currency": data["currency"].lower(),
        "reason": data["reason"],
        "status": data["status"],
        "evidence_due_by": datetime.fromtimestamp(due_by, UTC) if due_by else None,
        "updated_at": utcnow(),
    }


def _link_order(ctx: HandlerContext, dispute: Dispute) -> None:
    # Whichever enabled plugin keeps orders answers; without one the dispute stands alone.
    order = ctx.hook.order_for_charge(
        session=ctx.session,
        tenant=ctx.tenant,
        charge_id=dispute.charge_id,
        payment_intent_id=dispute.payment_intent_id,
    )
    if order is not None:
        dispute.order_id, dispute.order_reference = order.id, order.reference


def _id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value
