"""payhook-registration's per-tenant settings: none of its own.

Declaring the empty class still matters: payhook then refuses a table for this plugin that
sets anything but `events` (payhook's own key, which narrows the event types a tenant
sends it), instead of silently ignoring a misspelt key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """`[tenants.<slug>.plugin_config.registration]` takes only `events`."""
