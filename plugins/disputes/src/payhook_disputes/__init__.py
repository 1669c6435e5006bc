"""payhook-disputes: Stripe disputes recorded per tenant and linked to their orders."""

from __future__ import annotations

from typing import Any

from payhook import hookimpl

from . import handlers, hookspecs


@hookimpl
def startup(host: Any) -> None:
    host.add_hookspecs(hookspecs)  # payhook ignores a repeat (an app started twice)


@hookimpl
def register_handlers(register: Any) -> None:
    register("charge.dispute.created", handlers.record_dispute)
    register("charge.dispute.updated", handlers.record_dispute)
    register("charge.dispute.closed", handlers.record_dispute)
