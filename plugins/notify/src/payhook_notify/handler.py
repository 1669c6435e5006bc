"""The one handler: announce the event to the tenant's chat."""

from __future__ import annotations

from payhook import Event, HandlerContext

from . import delivery, messages
from .settings import Settings

__all__ = ["notify"]


def notify(event: Event, ctx: HandlerContext) -> None:
    """Post `{"text": ...}` to the tenant's URL; a failed post fails the run, to be retried.

    payhook creates a run only for the types the tenant lists in `events`.
    """
    settings: Settings = ctx.settings
    delivery.post(settings.url, messages.describe(event.to_dict(), ctx.tenant.slug), settings.timeout)
