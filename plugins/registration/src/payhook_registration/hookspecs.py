"""Hooks this plugin calls; other plugins implement them with `@payhook.hookimpl`.

Both fire after the handler's transaction committed, and only for plugins the tenant
enabled. The order they get is a detached snapshot: read it, and open a session of your
own to change anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from payhook import hookspec

if TYPE_CHECKING:
    from payhook import TenantConfig

    from .models import Order


@hookspec
def order_paid(order: Order, tenant: TenantConfig) -> None:
    """`order` became paid: called once per order, however often its events are replayed."""


@hookspec
def order_needs_attention(order: Order, reason: str) -> None:
    """A payment arrived that the order cannot take (it is cancelled, refunded or already paid)."""
