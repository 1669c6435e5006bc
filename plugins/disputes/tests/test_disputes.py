"""Disputes through signed deliveries of real payloads, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from dispute_events import dispute_event
from disputes_testkit import TENANT, Shop
from payhook.testing import load_event, store_backends

pytestmark = store_backends


def test_a_new_dispute_is_recorded_and_announced_once(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    event = dispute_event("created", payment_intent="pi_disputed")
    assert shop.send(event) == "succeeded"

    [dispute] = shop.disputes()
    assert (dispute.tenant, dispute.stripe_dispute_id, dispute.charge_id, dispute.payment_intent_id) == (
        TENANT,
        "dp_test_1",
        "ch_known",
        "pi_disputed",
    )
    assert (dispute.amount, dispute.currency, dispute.reason, dispute.status) == (
        Decimal("20.00"),
        "usd",
        "fraudulent",
        "warning_needs_response",
    )
    assert dispute.evidence_due_by == datetime(2022, 4, 4, 23, 59, 59, tzinfo=UTC)
    assert dispute.order_id is None  # no order-keeping plugin: the dispute stands alone
    assert shop.listener.opened == [("dp_test_1", "warning_needs_response", TENANT)]


def test_replays_keep_one_row_and_announce_once(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    event = dispute_event("created")
    shop.send(event)

    assert shop.harness.deliver(event).json()["status"] == "duplicate"
    assert shop.send(dispute_event("created")) == "succeeded"  # same dispute, another event id

    assert len(shop.disputes()) == 1
    assert len(shop.listener.opened) == 1


def test_updates_and_closing_follow_the_dispute(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    shop.send(dispute_event("created", created=1_700_000_000))
    shop.send(dispute_event("updated", status="needs_response", created=1_700_000_100))
    assert shop.disputes()[0].status == "needs_response"

    shop.send(dispute_event("closed", status="lost", created=1_700_000_200))
    [dispute] = shop.disputes()
    assert dispute.status == "lost"
    assert len(shop.listener.opened) == 1


def test_an_update_arriving_after_the_close_is_ignored(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    shop.send(dispute_event("closed", status="won", created=1_700_000_200))
    assert shop.send(dispute_event("updated", status="under_review", created=1_700_000_100)) == "succeeded"
    assert shop.disputes()[0].status == "won"


def test_a_closed_dispute_never_reopens_even_at_the_same_second(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    shop.send(dispute_event("closed", status="lost", created=1_700_000_000))
    shop.send(dispute_event("updated", status="under_review", created=1_700_000_000))
    assert shop.disputes()[0].status == "lost"


def test_the_first_event_seen_announces_the_dispute(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    shop.send(dispute_event("updated", status="under_review"))
    assert shop.listener.opened == [("dp_test_1", "under_review", TENANT)]


def test_a_dispute_is_linked_to_the_order_a_plugin_knows(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop(with_orders=True)
    shop.send(dispute_event("created", dispute_id="dp_known", charge="ch_known"))
    shop.send(dispute_event("created", dispute_id="dp_unknown", charge="ch_elsewhere"))

    linked, unlinked = shop.disputes()
    assert (linked.order_id, linked.order_reference) == (7, "SHOP-7")
    assert (unlinked.order_id, unlinked.order_reference) == (None, None)


def test_zero_decimal_amounts(make_shop: Callable[..., Shop]) -> None:
    shop = make_shop()
    shop.send(dispute_event("created", amount=5000, currency="jpy"))
    assert shop.disputes()[0].amount == Decimal("5000")


def test_the_current_api_shape_from_stripes_openapi_fixtures(
    make_shop: Callable[..., Shop], stripe_event: Callable[..., dict[str, Any]]
) -> None:
    shop = make_shop()
    event = stripe_event(load_event("openapi-fixtures3/charge.dispute.created"))
    assert shop.send(event) == "succeeded"
    [dispute] = shop.disputes()
    assert (dispute.stripe_dispute_id, dispute.amount, dispute.reason) == (
        "dp_1Pgc71B7WZ01zgkWMevJiAUx",
        Decimal("10.00"),
        "general",
    )


@pytest.mark.parametrize(
    ("kind", "status"), [("created", "needs_response"), ("updated", "under_review"), ("closed", "won")]
)
def test_each_event_replayed_has_no_further_effect(
    make_shop: Callable[..., Shop], kind: str, status: str
) -> None:
    shop = make_shop(with_orders=True)
    event = dispute_event(kind, status=status)
    shop.send(event)
    first = [(d.status, d.amount, d.order_id) for d in shop.disputes()]

    assert shop.harness.deliver(event).json()["status"] == "duplicate"
    assert shop.rerun(event) == "succeeded"
    assert shop.send(dispute_event(kind, status=status)) == "succeeded"

    assert [(d.status, d.amount, d.order_id) for d in shop.disputes()] == first
    assert len(shop.listener.opened) == 1
