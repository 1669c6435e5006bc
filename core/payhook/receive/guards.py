"""Per-tenant checks on a parsed event before it is stored: livemode and API version.

An event of a mode the tenant does not take is still stored (a redelivery stays a
duplicate, and an operator can see it) but gets no runs, with the reason kept. An event of
another API version than the tenant expects is handled as usual, flagged and logged: its
objects may not have the shape the handlers were written for.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from payhook.config import TenantConfig
from payhook.store.eventlog import Delivery

__all__ = ["check"]

log = logging.getLogger("payhook.guards")


def check(tenant: TenantConfig, delivery: Delivery) -> Delivery:
    """`delivery` with the tenant's guards applied (itself when none applies)."""
    wanted = tenant.livemode
    if wanted != "both" and delivery.livemode != (wanted == "live"):
        mode = "live" if delivery.livemode else "test"
        reason = f"a {mode} event; tenants.{tenant.slug}.livemode is {wanted!r}"
        delivery = replace(delivery, handlers=(), ignored_reason=reason)
    expected = tenant.api_version
    if expected is not None and delivery.api_version is not None and delivery.api_version != expected:
        log.warning(
            "event %s for %s has API version %s, not %s as tenants.%s.api_version expects; "
            "handling it anyway, flagged",
            delivery.stripe_event_id,
            tenant.slug,
            delivery.api_version,
            expected,
            tenant.slug,
        )
        delivery = replace(delivery, api_version_mismatch=True)
    return delivery
