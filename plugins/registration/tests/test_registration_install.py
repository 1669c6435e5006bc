"""The installed distribution: found through its entry points, its tables migrated."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import distribution
from typing import Any

from payhook import PluginHost
from payhook.testing import MakePayhook, assert_migrations_match, store_backends

import payhook_registration
from payhook_registration.models import Order
from payhook_registration.orders import create_order


def test_the_distribution_declares_the_plugin_and_its_migrations() -> None:
    entry_points = {(ep.group, ep.name): ep for ep in distribution("payhook-registration").entry_points}
    assert entry_points["payhook", "registration"].load() is payhook_registration
    assert entry_points["payhook.migrations", "registration"].value == "payhook_registration.migrations"


def test_discovery_finds_the_plugin_and_its_handlers() -> None:
    host = PluginHost()
    assert "registration" in host.names
    handled = {handler.event_type for handler in host.handlers["registration"]}
    assert {"payment_intent.succeeded", "charge.refunded", "checkout.session.expired"} <= handled


def test_its_hooks_are_declared_at_startup_however_often_it_runs() -> None:
    host = PluginHost({"registration": payhook_registration})
    host.hook.startup(host=host)
    host.hook.startup(host=host)  # an app whose lifespan is entered again
    assert host.hook.order_paid.spec is not None
    assert host.hook.order_needs_attention.spec is not None


@store_backends
def test_a_discovered_registration_pays_an_order(
    make_payhook: MakePayhook, stripe_event: Callable[..., dict[str, Any]]
) -> None:
    harness = make_payhook(tenants={"conf": {"plugins": ["registration"]}}, discover=True)
    with harness.session() as session:
        order = create_order(session, tenant="conf", reference="R-1", total="20.00", currency="usd")
        session.commit()
        order_id = order.id
    event = stripe_event("payment_intent.succeeded", data__object__metadata={"order_id": str(order_id)})

    harness.send(event)

    with harness.session() as session:
        paid = session.get(Order, order_id)
        assert paid is not None and paid.status == "paid"


@store_backends
def test_the_migration_creates_exactly_the_models_tables(payhook_database_url: str) -> None:
    assert_migrations_match("registration", payhook_database_url)
