"""Events a handler leaves alone on purpose, recorded with the reason.

payhook's runs are succeeded, failed or dead; "skipped" is not among them, so a skip
succeeds the run and leaves a row in `registration_skipped_event` for operators to read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from payhook import HandlerContext
from sqlmodel import select

from .models import SkippedEvent

__all__ = ["Skipped", "records_skips"]


class Skipped(Exception):
    """Raise from a handler, before it writes anything, to skip the event with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def records_skips(handler: Callable[[Any, HandlerContext], None]) -> Callable[[Any, HandlerContext], None]:
    """Turn `Skipped` raised by `handler` into a recorded skip and a succeeded run."""

    @functools.wraps(handler)
    def run(event: Any, ctx: HandlerContext) -> None:
        try:
            handler(event, ctx)
        except Skipped as skip:
            record_skip(event, ctx, skip.reason)

    return run


def record_skip(event: Any, ctx: HandlerContext, reason: str) -> None:
    ctx.logger.info("skipped %s %s: %s", event.type, event.id, reason)
    already = ctx.session.exec(select(SkippedEvent).where(SkippedEvent.run_id == ctx.run_id)).first()
    if already is None:
        ctx.session.add(
            SkippedEvent(
                run_id=ctx.run_id,
                tenant=ctx.tenant.slug,
                stripe_event_id=event.id,
                event_type=event.type,
                reason=reason,
            )
        )
