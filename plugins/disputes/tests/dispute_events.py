"""Real `charge.dispute.*` payloads (shipped with payhook) about our charges."""

from __future__ import annotations

from typing import Any

from payhook.testing import load_event


def dispute_event(
    kind: str = "created",
    *,
    dispute_id: str = "dp_test_1",
    charge: str = "ch_known",
    status: str = "warning_needs_response",
    amount: int = 2000,
    currency: str = "usd",
    created: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """`charge.dispute.created` as Stripe's CLI made it; `.updated` / `.closed` share its shape."""
    event = load_event("charge.dispute.created")
    event["type"] = f"charge.dispute.{kind}"
    if created is not None:
        event["created"] = created
    event["data"]["object"].update(
        id=dispute_id, charge=charge, status=status, amount=amount, currency=currency, **fields
    )
    return event
