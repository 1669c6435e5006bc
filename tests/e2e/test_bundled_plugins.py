"""End to end: payhook-registration, -disputes and -notify installed together and found
through their entry points, enabled per tenant, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import entry_points
from typing import Any

import pytest
import respx
from payhook.testing import MakePayhook, PayhookHarness, load_event, store_backends
from sqlmodel import col, select

BUNDLED = {"registration", "disputes", "notify"}
INSTALLED = {ep.name for ep in entry_points(group="payhook")}
pytestmark = [
    pytest.mark.skipif(
        not BUNDLED <= INSTALLED,
        reason="the bundled plugins are not installed (tox installs them: `tox run -e core`)",
    ),
    store_backends,
]

CHAT = "https://chat.example.test/hooks/pycon"
TENANTS = {
    # The organiser's conference runs everything and hears about disputes and failed payments.
    "pycon": {
        "plugins": ["registration", "disputes", "notify"],
        "plugin_config": {
            "notify": {"url": CHAT, "events": ["charge.dispute.created", "payment_intent.payment_failed"]}
        },
    },
    # A second event of the same organiser takes registrations only.
    "djangocon": {"plugins": ["registration"]},
    # A shop that only tracks disputes, although payhook-registration is installed.
    "shop": {"plugins": ["disputes"]},
}


@pytest.fixture
def chat() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture
def payhook(make_payhook: MakePayhook) -> PayhookHarness:
    return make_payhook(tenants=TENANTS, discover=True)


def create_order(harness: PayhookHarness, tenant: str, reference: str, total: str = "20.00") -> int:
    from payhook_registration.orders import create_order

    with harness.session() as session:
        order = create_order(session, tenant=tenant, reference=reference, total=total, currency="usd")
        session.commit()
        assert order.id is not None
        return order.id


def succeeded(order_id: int, intent: str, charge: str) -> dict[str, Any]:
    event = load_event("payment_intent.succeeded", data__object__metadata={"order_id": str(order_id)})
    event["data"]["object"].update(id=intent, latest_charge=charge)
    return event


def dispute(charge: str, dispute_id: str) -> dict[str, Any]:
    return load_event("charge.dispute.created", data__object__charge=charge, data__object__id=dispute_id)


def test_all_three_are_discovered_and_their_tables_migrated(payhook: PayhookHarness) -> None:
    from payhook.store.migrations import VERSION_TABLE
    from sqlalchemy import text

    assert set(payhook.app.payhook.plugins.names) >= BUNDLED
    with payhook.store.transaction() as conn:
        heads = set(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    assert {"registration_0001", "disputes_0001"} <= heads


def test_a_conference_order_is_paid_disputed_linked_and_announced(
    payhook: PayhookHarness, chat: respx.MockRouter
) -> None:
    from payhook_disputes.models import Dispute
    from payhook_registration.models import Order

    posted = chat.post(CHAT).respond(200)
    order_id = create_order(payhook, "pycon", "PYCON-1")

    payhook.send(succeeded(order_id, "pi_pycon_1", "ch_pycon_1"), tenant="pycon")
    assert not posted.called  # payment_intent.succeeded is not in the tenant's notify list

    payhook.send(dispute("ch_pycon_1", "dp_pycon_1"), tenant="pycon")
    with payhook.session() as session:
        order = session.get(Order, order_id)
        [row] = session.exec(select(Dispute))
    assert order is not None and order.status == "paid"
    # payhook-disputes asked through its hook; payhook-registration answered.
    assert (row.order_id, row.order_reference, row.amount) == (order_id, "PYCON-1", Decimal("1.00"))
    [call] = posted.calls
    assert b"Dispute opened: 1.00 USD on ch_pycon_1" in call.request.content


def test_plugins_run_only_for_tenants_that_enable_them(
    payhook: PayhookHarness, chat: respx.MockRouter
) -> None:
    from payhook_disputes.models import Dispute

    order_id = create_order(payhook, "djangocon", "DJANGO-1")
    payhook.send(succeeded(order_id, "pi_django_1", "ch_django_1"), tenant="djangocon")

    # djangocon has no disputes plugin: the event is stored and ignored.
    assert payhook.send(dispute("ch_django_1", "dp_a"), tenant="djangocon", expect="ignored") == []
    # The shop runs disputes, and registration is installed but not enabled for it: its
    # answer to `order_for_charge` is not asked, so the dispute stays unlinked...
    payhook.send(dispute("ch_django_1", "dp_b"), tenant="shop")
    # ...and pycon's registration only knows pycon's orders.
    chat.post(CHAT).respond(200)
    payhook.send(dispute("ch_django_1", "dp_c"), tenant="pycon")

    with payhook.session() as session:
        rows = {row.stripe_dispute_id: row for row in session.exec(select(Dispute))}
    assert set(rows) == {"dp_b", "dp_c"}
    assert rows["dp_b"].order_id is None
    assert rows["dp_c"].order_id is None


def test_a_failing_notification_is_retried_without_rerunning_registration(
    payhook: PayhookHarness, chat: respx.MockRouter
) -> None:
    import httpx
    from payhook_registration.models import Payment

    posted = chat.post(CHAT).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
    order_id = create_order(payhook, "pycon", "PYCON-2")
    event = load_event("payment_intent.payment_failed", data__object__metadata={"order_id": str(order_id)})
    event["data"]["object"]["id"] = "pi_declined"

    statuses = {run.plugin: run.status for run in payhook.send(event, tenant="pycon")}
    assert statuses == {"registration": "succeeded", "notify": "failed"}

    payhook.process(include_scheduled=True)
    runs = payhook.runs(event["id"])
    assert {run.plugin: (run.status, run.attempts) for run in runs} == {
        "registration": ("succeeded", 1),
        "notify": ("succeeded", 2),
    }
    assert posted.call_count == 2
    with payhook.session() as session:
        [payment] = session.exec(select(Payment).order_by(col(Payment.id)))
    assert (payment.status, payment.failure_reason) == ("failed", "Your card was declined. (generic_decline)")
