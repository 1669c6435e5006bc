"""A payhook app with payhook-disputes, and plugins that listen to or answer its hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from disputes_testkit import TENANT, DisputeListener, OrderBook, Shop

import payhook_disputes

if TYPE_CHECKING:
    from payhook.testing import MakePayhook

pytest_plugins = ["payhook.testing"]


@pytest.fixture
def make_shop(make_payhook: MakePayhook) -> Callable[..., Shop]:
    """`make_shop(with_orders=True)` also enables a plugin that knows the shop's orders."""

    def factory(with_orders: bool = False) -> Shop:
        listener = DisputeListener()
        plugins: dict[str, object] = {"disputes": payhook_disputes, "listener": listener}
        if with_orders:
            plugins["orders"] = OrderBook()
        harness = make_payhook(plugins, tenants={TENANT: {"plugins": list(plugins)}})
        return Shop(harness, listener)

    return factory
