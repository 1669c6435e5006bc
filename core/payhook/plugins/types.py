"""Small value types shared by the core's modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import stripe
    from stripe.v2.core import EventNotification

    from payhook.plugins.context import HandlerContext
    from payhook.stripe_api.events import Event

__all__ = ["EventT", "Handler", "HandlerFunc", "HookHost", "Register", "StoredEvent"]

# `handler(event, ctx)` of a snapshot event; what it returns is ignored.
HandlerFunc = Callable[["Event", "HandlerContext"], object]

# What a handler's first parameter may be typed as: a snapshot event (`payhook.Event`, or the
# `stripe.Event` it is), or for a thin event the SDK's `EventNotification` or the subclass of
# its type (`V1BillingMeterErrorReportTriggeredEventNotification`, ...). A TypeVar, not a
# union: a handler that takes one subclass is as good as one that takes them all.
EventT = TypeVar("EventT", bound="stripe.Event | EventNotification")


class Register(Protocol):
    """What `register_handlers` is given: `register(event_type, handler, *, name=None)`."""

    def __call__(
        self, event_type: str, handler: Callable[[EventT, HandlerContext], object], *, name: str | None = None
    ) -> None: ...


class HookHost(Protocol):
    """What the `startup` hook is given: the plugin host, to declare hooks of a plugin's own."""

    def add_hookspecs(self, module_or_class: Any) -> None: ...


@dataclass(frozen=True)
class Handler:
    """A plugin's handler for one event type (or pattern)."""

    plugin: str
    name: str
    event_type: str
    # A snapshot event's handler, or a thin event's (see `EventT`).
    func: Callable[[Any, HandlerContext], object]

    def __call__(self, event: Event | EventNotification, ctx: HandlerContext) -> object:
        return self.func(event, ctx)


@dataclass(frozen=True)
class StoredEvent:
    """What ingest knows about an event it has just committed."""

    id: int
    tenant: str
    stripe_event_id: str
    type: str
    payload: dict[str, Any]
    secret_index: int
    runs: int
