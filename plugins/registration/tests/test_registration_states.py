"""The order state machine on its own."""

from __future__ import annotations

import pytest

from payhook_registration.models import OrderStatus
from payhook_registration.states import can_move


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "paid", True),
        ("paid", "partially_refunded", True),
        ("partially_refunded", "refunded", True),
        ("paid", "refunded", True),
        ("pending", "cancelled", True),
        ("paid", "pending", False),
        ("refunded", "paid", False),
        ("refunded", "partially_refunded", False),
        ("partially_refunded", "paid", False),
        ("cancelled", "paid", False),
        ("cancelled", "pending", False),
        ("paid", "cancelled", False),
        ("refunded", "cancelled", False),
        ("paid", "paid", False),
    ],
)
def test_orders_move_only_forward(current: str, new: str, allowed: bool) -> None:
    assert can_move(current, OrderStatus(new)) is allowed
