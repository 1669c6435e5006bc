"""The shop's payhook handlers: a plugin named `shop` (the app's label), found by
payhook-django without any packaging, enabled for a tenant in payhook.toml."""

from typing import Any

from payhook import hookimpl

from examples.django_site.shop.models import Order


def mark_paid(event: Any, ctx: Any) -> None:
    """The order named by the payment's `metadata.order_id` is paid. This runs inside the
    run's transaction: the order's update and the run's success mark commit together."""
    ref = event.payload["data"]["object"]["metadata"]["order_id"]
    order = Order.objects.select_for_update().get(ref=ref)
    order.paid = True
    order.save(update_fields=["paid"])


@hookimpl
def register_handlers(register: Any) -> None:
    register("payment_intent.succeeded", mark_paid, name="shop.mark_paid")
