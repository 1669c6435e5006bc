"""This plugin's per-tenant settings, from `[tenants.<slug>.plugin_config.notify]`."""

from __future__ import annotations

from dataclasses import dataclass

from payhook import InvalidSetting

__all__ = ["DEFAULT_EVENTS", "Settings"]

DEFAULT_EVENTS = ("charge.dispute.created", "payment_intent.payment_failed")


@dataclass(frozen=True)
class Settings:
    """payhook reads the table into this when it loads its configuration, and refuses to
    start on a mistake, naming the key: a handler only ever sees valid settings."""

    # The URL of a Slack incoming webhook is itself a secret: organisers give it as
    # { "$env" = "NAME" }, which payhook has replaced with the variable's value by now.
    url: str
    # Which event types to announce. payhook itself reads this key: other types get no
    # notify run at all. Without it, these defaults apply.
    events: tuple[str, ...] = DEFAULT_EVENTS
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            # The value is not shown: it may be a secret, mistyped.
            raise InvalidSetting("url", 'must be an http(s) URL, or { "$env" = "NAME" } naming one')
        if self.timeout <= 0:
            raise InvalidSetting("timeout", f"must be seconds, greater than 0, got {self.timeout!r}")
