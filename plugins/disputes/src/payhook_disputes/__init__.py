"""payhook-disputes: Stripe disputes recorded per tenant and linked to their orders."""

from __future__ import annotations

from typing import Any

from payhook import hookimpl

from . import handlers, hookspecs


@hookimpl
def startup(host: Any) -> None:
    # A restarted app runs startup again, and pluggy takes a hook's spec only once.
    if getattr(getattr(host.hook, "dispute_opened", None), "spec", None) is None:
        host.add_hookspecs(hookspecs)


@hookimpl
def register_handlers(register: Any) -> None:
    register("charge.dispute.created", handlers.record_dispute)
    register("charge.dispute.updated", handlers.record_dispute)
    register("charge.dispute.closed", handlers.record_dispute)
