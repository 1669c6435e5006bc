"""Plugins declaring hooks of their own, reached per tenant through `ctx.hook`."""

from __future__ import annotations

from typing import Any

import pluggy
from payhook import HandlerContext, hookimpl
from payhook.plugins.host import PluginHost
from payhook.testing import PayhookHarness

spec = pluggy.HookspecMarker("payhook")


class ShopSpecs:
    @spec
    def order_paid(self, order: str, tenant: str) -> None:
        """An order was paid (fires after commit)."""


class Shop:
    @hookimpl
    def startup(self, host: PluginHost) -> None:
        host.add_hookspecs(ShopSpecs)

    def paid(self, event: Any, ctx: HandlerContext) -> None:
        ctx.after_commit(ctx.hook.order_paid, order=event.data.object.id, tenant=ctx.tenant.slug)

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register("payment_intent.succeeded", self.paid, name="paid")


class Mailer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    @hookimpl
    def order_paid(self, order: str, tenant: str) -> None:
        self.sent.append((tenant, order))


def test_plugin_hooks_reach_only_plugins_the_tenant_enabled(make_payhook: Any, stripe_event: Any) -> None:
    mailer = Mailer()
    harness: PayhookHarness = make_payhook(
        {"shop": Shop(), "mailer": mailer},
        tenants={"with-mail": {"plugins": ["shop", "mailer"]}, "no-mail": {"plugins": ["shop"]}},
    )
    harness.deliver(stripe_event("payment_intent.succeeded"), tenant="with-mail")
    harness.deliver(stripe_event("payment_intent.succeeded"), tenant="no-mail")
    outcomes = harness.process()
    assert [outcome.status for outcome in outcomes] == ["succeeded", "succeeded"]
    assert mailer.sent == [("with-mail", "pi_000000000000000000000000")]


def test_handlers_may_register_for_patterns(make_payhook: Any, stripe_event: Any) -> None:
    seen: list[str] = []

    class Watcher:
        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register("charge.dispute.*", lambda event, ctx: seen.append(f"dispute {event.type}"), name="d")
            register("*", lambda event, ctx: seen.append(f"any {event.type}"), name="all")

    harness = make_payhook({"watch": Watcher()})
    for name in ("charge.dispute.created", "customer.created"):
        assert harness.deliver(stripe_event(name)).json()["status"] == "accepted"
    harness.process()
    assert sorted(seen) == [
        "any charge.dispute.created",
        "any customer.created",
        "dispute charge.dispute.created",
    ]
