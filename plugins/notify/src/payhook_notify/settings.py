"""This plugin's per-tenant settings, from `[tenants.<slug>.plugin_config.notify]`."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payhook import GiveUp

__all__ = ["DEFAULT_EVENTS", "Settings", "load"]

DEFAULT_EVENTS = ("charge.dispute.created", "payment_intent.payment_failed")
DEFAULT_TIMEOUT = 5.0
_KEYS = {"url", "events", "timeout"}
_WHERE = "plugin_config.notify"


@dataclass(frozen=True)
class Settings:
    url: str
    events: tuple[str, ...]
    timeout: float

    def wants(self, event_type: str) -> bool:
        """True when `event_type` matches a listed type or pattern (`"charge.dispute.*"`)."""
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.events)


def load(config: Mapping[str, Any]) -> Settings:
    """Validated settings; a mistake gives the run up with a message naming the key.

    payhook does not let plugins check their configuration at startup, so a mistake
    shows up here, as dead runs whose error says what to fix. (payhook itself resolves
    `{ "$env" = "NAME" }` when it loads the configuration, and refuses to start when the
    variable is missing.)
    """
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise GiveUp(f"{_WHERE}: unknown key(s) {', '.join(unknown)}; expected url, events, timeout")
    events = config.get("events", list(DEFAULT_EVENTS))
    if not isinstance(events, list) or not all(isinstance(e, str) and e for e in events):
        raise GiveUp(f'{_WHERE}.events must be a list of event types, e.g. ["charge.dispute.created"]')
    timeout = config.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise GiveUp(f"{_WHERE}.timeout must be a number of seconds greater than 0, got {timeout!r}")
    return Settings(url=_url(config.get("url")), events=tuple(events), timeout=float(timeout))


def _url(value: Any) -> str:
    # The URL of a Slack incoming webhook is itself a secret: organisers give it as
    # { "$env" = "NAME" }, which payhook has replaced with the variable's value by now.
    if value == "":
        raise GiveUp(f"{_WHERE}.url is empty (an environment variable set to nothing?)")
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise GiveUp(f'{_WHERE}.url must be an http(s) URL or {{ "$env" = "NAME" }}')
    return value
