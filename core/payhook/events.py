"""The event a handler receives."""

from __future__ import annotations

import stripe

__all__ = ["Event"]


class Event(stripe.Event):
    """A snapshot Stripe event, exactly as Stripe sent it (a `stripe.Event`).

    The same object is shared by every handler run of one event: treat it as read-only.
    """
