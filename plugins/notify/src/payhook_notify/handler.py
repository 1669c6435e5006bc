"""The one handler: announce the event if the tenant asked for its type."""

from __future__ import annotations

from payhook import Event, HandlerContext

from . import delivery, messages, settings

__all__ = ["notify"]


def notify(event: Event, ctx: HandlerContext) -> None:
    """Post `{"text": ...}` to the tenant's URL; a failed post fails the run, to be retried."""
    config = settings.load(ctx.config)
    if config.wants(event.type):
        delivery.post(config.url, messages.describe(event.to_dict(), ctx.tenant.slug), config.timeout)
