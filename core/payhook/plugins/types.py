"""Small value types shared by the core's modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from payhook.plugins.context import HandlerContext
    from payhook.stripe_api.events import Event

__all__ = ["Handler", "HandlerFunc", "HookHost", "Register", "StoredEvent"]

# `handler(event, ctx)`; what it returns is ignored.
HandlerFunc = Callable[["Event", "HandlerContext"], object]


class Register(Protocol):
    """What `register_handlers` is given: `register(event_type, handler, *, name=None)`."""

    def __call__(self, event_type: str, handler: HandlerFunc, *, name: str | None = None) -> None: ...


class HookHost(Protocol):
    """What the `startup` hook is given: the plugin host, to declare hooks of a plugin's own."""

    def add_hookspecs(self, module_or_class: Any) -> None: ...


@dataclass(frozen=True)
class Handler:
    """A plugin's handler for one event type (or pattern)."""

    plugin: str
    name: str
    event_type: str
    func: HandlerFunc

    def __call__(self, event: Event, ctx: HandlerContext) -> object:
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
