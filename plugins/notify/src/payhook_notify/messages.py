"""One line of text per event: what happened, to which object, for how much."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from payhook import UnknownCurrency, from_minor_units

__all__ = ["describe"]


def describe(event: dict[str, Any], tenant: str) -> str:
    """`[pycon-2027] Dispute opened: 20.00 USD on ch_..., reason fraudulent, ... (evt_...)`"""
    obj = event.get("data", {}).get("object", {})
    kind = event.get("type", "")
    describe_kind = next((fn for prefix, fn in _DESCRIBERS if kind.startswith(prefix)), _generic)
    text = describe_kind(kind, obj)
    order_id = (obj.get("metadata") or {}).get("order_id")
    if order_id:
        text += f" [order {order_id}]"
    return f"[{tenant}] {text} ({event.get('id')})"


def _money(obj: dict[str, Any], field: str = "amount") -> str:
    amount, currency = obj.get(field), obj.get("currency")
    if not isinstance(amount, int) or not isinstance(currency, str):
        return ""
    try:
        return f"{from_minor_units(amount, currency)} {currency.upper()}"
    except UnknownCurrency:
        return f"{amount} (minor units) {currency.upper()}"


def _dispute(kind: str, obj: dict[str, Any]) -> str:
    what = {"charge.dispute.created": "Dispute opened", "charge.dispute.closed": "Dispute closed"}
    text = f"{what.get(kind, 'Dispute updated')}: {_money(obj)} on {obj.get('charge')}"
    text += f", reason {obj.get('reason')}, status {obj.get('status')}"
    due_by = (obj.get("evidence_details") or {}).get("due_by")
    if due_by and kind != "charge.dispute.closed":
        text += f", evidence due {datetime.fromtimestamp(due_by, UTC):%Y-%m-%d}"
    return text


def _payment_failed(kind: str, obj: dict[str, Any]) -> str:
    error = obj.get("last_payment_error") or {}
    reason = error.get("message") or error.get("code") or obj.get("cancellation_reason") or "no error details"
    verb = "canceled" if kind.endswith("canceled") else "failed"
    return f"Payment {verb}: {_money(obj)} ({obj.get('id')}): {reason}"


def _refund(kind: str, obj: dict[str, Any]) -> str:
    return f"Refund: {_money(obj, 'amount_refunded')} of {_money(obj)} refunded on {obj.get('id')}"


def _generic(kind: str, obj: dict[str, Any]) -> str:
    money = _money(obj)
    return f"{kind}: {obj.get('id')}" + (f", {money}" if money else "")


_DESCRIBERS: list[tuple[str, Callable[[str, dict[str, Any]], str]]] = [
    ("charge.dispute.", _dispute),
    ("payment_intent.payment_failed", _payment_failed),
    ("payment_intent.canceled", _payment_failed),
    ("charge.refunded", _refund),
]
