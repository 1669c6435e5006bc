"""The applied-marker: exactly-once Django writes when payhook's store is on another
database than the handler's Django writes.

There the run's success mark cannot commit with the handler's Django writes. Instead, the
handler runs in one `transaction.atomic()` on the Django database `AppliedRun` is routed to
(`default` unless a router says otherwise), and that block also writes an `AppliedRun` row
for the run. Django commits first; payhook's success mark follows in payhook's store. A
process that dies between the two leaves the run `running`; when it is reclaimed, the
marker is found, the handler is not called again, and only the success mark is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connections, router, transaction
from payhook import hookimpl

from payhook_django.models import AppliedRun

__all__ = ["applied_marker"]


def applied_marker(plugin: str) -> Callable[..., Any]:
    """A `run_handler` hook for the site plugin `plugin`'s handlers (run before the core's)."""

    @hookimpl(specname="run_handler", tryfirst=True)
    def run_once(handler: Any, event: Any, ctx: Any) -> Any:
        if handler.plugin != plugin:
            return None  # another plugin's handler: not ours to wrap
        alias = router.db_for_write(AppliedRun)
        if connections[alias].in_atomic_block:
            # The store is on this database (url = "django"): the run's own transaction
            # already holds the handler's writes and its success mark.
            return None
        close_old_connections()
        try:
            with transaction.atomic(using=alias, durable=True):
                key = {
                    "tenant": ctx.tenant.slug,
                    "stripe_event_id": event.id,
                    "plugin": handler.plugin,
                    "handler": handler.name,
                }
                if AppliedRun.objects.using(alias).filter(**key).exists():
                    ctx.logger.info(
                        "run %s: its Django writes committed before its success mark was "
                        "recorded; the handler is not called again",
                        ctx.run_id,
                    )
                    return True
                result = handler(event, ctx)
                # A second runner of the same run (a lease taken over) fails here, on the
                # unique constraint, and its writes roll back.
                AppliedRun.objects.using(alias).create(run_id=ctx.run_id, **key)
        finally:
            close_old_connections()
        # firstresult: a non-None answer keeps the core's run_handler from calling it again.
        return True if result is None else result

    return run_once
