"""Real Stripe payloads (shipped with payhook) about our orders and intents."""

from __future__ import annotations

import copy
from typing import Any

from payhook.testing import load_event


def _with(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event["data"]["object"].update(fields)
    return event


def intent_event(
    kind: str,
    order_id: int | None,
    intent_id: str,
    amount: int = 2000,
    currency: str = "usd",
    **fields: Any,
) -> dict[str, Any]:
    """A real `payment_intent.<kind>` payload, about our intent and order.

    Stripe's CLI gave us succeeded, payment_failed and canceled; `processing` is the
    succeeded payload with the status and received amount a processing intent has.
    """
    sample = "succeeded" if kind == "processing" else kind
    event = load_event(f"payment_intent.{sample}")
    metadata = {} if order_id is None else {"order_id": str(order_id)}
    intent = event["data"]["object"]
    intent["charges"]["data"] = [dict(c, id=f"ch_for_{intent_id}") for c in intent["charges"]["data"]]
    received = amount if kind == "succeeded" else 0
    if kind == "processing":
        event["type"], fields = "payment_intent.processing", {"status": "processing", **fields}
    return _with(
        event,
        id=intent_id,
        metadata=metadata,
        amount=amount,
        amount_received=received,
        currency=currency,
        **fields,
    )


def refund_event(
    order_id: int | None, intent_id: str, *, amount: int = 2000, refunded: int = 2000, currency: str = "usd"
) -> dict[str, Any]:
    """`charge.refunded` for the intent's charge; partial when `refunded < amount`.

    Only a full refund was captured from Stripe, so a partial one is that payload with its
    amounts changed, as Stripe would report them (cumulative `amount_refunded`).
    """
    event = load_event("charge.refunded.full")
    charge = event["data"]["object"]
    refund = copy.deepcopy(charge["refunds"]["data"][0])
    refund.update(amount=refunded, currency=currency, payment_intent=intent_id, charge=f"ch_for_{intent_id}")
    charge["refunds"]["data"] = [refund]
    metadata = {} if order_id is None else {"order_id": str(order_id)}
    return _with(
        event,
        id=f"ch_for_{intent_id}",
        payment_intent=intent_id,
        metadata=metadata,
        amount=amount,
        amount_captured=amount,
        amount_refunded=refunded,
        refunded=refunded == amount,
        currency=currency,
    )


def checkout_event(
    kind: str,
    order_id: int,
    intent_id: str | None,
    *,
    amount: int = 2000,
    currency: str = "usd",
    **fields: Any,
) -> dict[str, Any]:
    """`checkout.session.completed` (a real payload), or `.expired` made from it."""
    event = load_event("checkout.session.completed")
    if kind == "expired":
        event["type"] = "checkout.session.expired"
        fields = {"status": "expired", "payment_status": "unpaid", **fields}
    return _with(
        event,
        metadata={"order_id": str(order_id)},
        payment_intent=intent_id,
        amount_total=amount,
        amount_subtotal=amount,
        currency=currency,
        **fields,
    )
