"""What a handler gets besides the event: its session, tenant, config and helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from .config import TenantConfig

if TYPE_CHECKING:
    from .store import Store

__all__ = ["GiveUp", "HandlerContext", "RetryLater", "Skip"]


class RetryLater(Exception):
    """Raise from a handler to roll back and try again after `delay` seconds."""

    def __init__(self, reason: str = "handler asked to retry later", *, delay: float = 60.0) -> None:
        self.reason = reason
        self.delay = delay
        super().__init__(reason)


class GiveUp(Exception):
    """Raise from a handler to roll back and mark the run dead at once, with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Skip(Exception):
    """Raise from a handler when the event needs nothing from it (say, no order id).

    The handler's writes are rolled back and the run is marked `skipped`, with `reason`
    kept in `last_error`: a decision, recorded, not an error to retry.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class HandlerContext:
    """Everything a handler may use. The session is open; the core commits it."""

    session: Session
    tenant: TenantConfig
    plugin: str
    config: Mapping[str, Any]
    logger: logging.LoggerAdapter[logging.Logger]
    hook: Any
    run_id: int
    attempt: int
    event_id: int
    _store: Store = field(repr=False)
    _lease_token: str = field(repr=False)
    _after_commit: list[Callable[[], Any]] = field(default_factory=list, repr=False)

    def after_commit(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Call `func(*args, **kwargs)` once this handler's transaction has committed.

        Nothing registered here runs if the handler fails or its lease was lost.
        """
        self._after_commit.append(lambda: func(*args, **kwargs))

    def extend_lease(self, seconds: float) -> bool:
        """Keep this run claimed for `seconds` more; False if the lease was already lost."""
        return self._store.extend_lease(self.run_id, self._lease_token, seconds)

    def newer_event_applied(self) -> bool:
        """True when an event created later about the same object was already handled
        successfully by this plugin (so an out-of-order delivery can be skipped)."""
        return self._store.newer_event_applied(self.session, self.event_id, self.plugin)
