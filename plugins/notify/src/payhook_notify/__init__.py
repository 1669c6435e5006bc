"""payhook-notify: a short chat message for the Stripe event types a tenant lists."""

from __future__ import annotations

from payhook import Register, hookimpl

from .handler import notify
from .settings import Settings

# The types notify has a message for. A tenant picks among them with `events`, and payhook
# creates runs for those only.
ANNOUNCED = (
    "charge.dispute.*",
    "charge.refunded",
    "checkout.session.completed",
    "payment_intent.canceled",
    "payment_intent.payment_failed",
    "payment_intent.succeeded",
)


@hookimpl
def plugin_settings() -> type[Settings]:
    return Settings


@hookimpl
def register_handlers(register: Register) -> None:
    for event_type in ANNOUNCED:
        register(event_type, notify)
