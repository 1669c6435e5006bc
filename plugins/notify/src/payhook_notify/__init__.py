"""payhook-notify: a short chat message for the Stripe event types a tenant lists."""

from __future__ import annotations

from payhook import Register, hookimpl

from .handler import notify


@hookimpl
def register_handlers(register: Register) -> None:
    # Every type: which ones to announce is per-tenant configuration, read when the run runs.
    register("*", notify)
