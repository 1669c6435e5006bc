"""payhook-disputes: Stripe disputes recorded per tenant and linked to their orders."""

from __future__ import annotations

from payhook import PluginHost, Register, hookimpl

from . import handlers, hookspecs
from .settings import Settings


@hookimpl
def startup(host: PluginHost) -> None:
    host.add_hookspecs(hookspecs)  # payhook ignores a repeat (an app started twice)


@hookimpl
def plugin_settings() -> type[Settings]:
    return Settings


@hookimpl
def register_handlers(register: Register) -> None:
    register("charge.dispute.created", handlers.record_dispute)
    register("charge.dispute.updated", handlers.record_dispute)
    register("charge.dispute.closed", handlers.record_dispute)
