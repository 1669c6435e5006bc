"""Plugins and tables the core tests hand to the app directly (DESIGN §4.3)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from payhook import HandlerContext, hookimpl
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel, col, select


class Effect(SQLModel, table=True):
    """One row per applied handler call: what "exactly once" is counted on."""

    __tablename__ = "testing_effect"

    id: int | None = Field(default=None, primary_key=True)
    plugin: str
    handler: str
    stripe_event_id: str
    tenant: str


def create_effect_table(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine, tables=[Effect.__table__])  # type: ignore[attr-defined]


def effects(engine: Engine, handler: str | None = None) -> list[Effect]:
    from sqlmodel import Session

    with Session(engine) as session:
        query = select(Effect).order_by(col(Effect.id))
        if handler is not None:
            query = query.where(Effect.handler == handler)
        return list(session.exec(query))


def record(plugin: str, handler: str) -> Callable[[Any, HandlerContext], None]:
    def apply(event: Any, ctx: HandlerContext) -> None:
        ctx.session.add(
            Effect(plugin=plugin, handler=handler, stripe_event_id=event.id, tenant=ctx.tenant.slug)
        )

    apply.__name__ = apply.__qualname__ = handler
    return apply


class RecordingPlugin:
    """Writes an Effect row per call; `fail` makes a handler raise after writing."""

    def __init__(self, name: str, event_types: dict[str, list[str]] | None = None) -> None:
        self.name = name
        self.event_types = event_types or {"payment_intent.succeeded": ["apply"]}
        self.failing: dict[str, Callable[[int], BaseException | None]] = {}
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None

    def fail(self, handler: str, when: Callable[[int], BaseException | None]) -> None:
        """`when(call_number)` returns the exception to raise on that call, or None."""
        self.failing[handler] = when

    def handler(self, name: str) -> Callable[[Any, HandlerContext], None]:
        write = record(self.name, name)

        def run(event: Any, ctx: HandlerContext) -> None:
            with self.lock:
                self.calls.append((name, event.id))
                count = sum(1 for call in self.calls if call[0] == name)
            if self.gate is not None:
                self.gate.wait(10)
            write(event, ctx)
            failing = self.failing.get(name)
            error = failing(count) if failing else None
            if error is not None:
                raise error

        run.__name__ = run.__qualname__ = name
        return run

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        for event_type, names in self.event_types.items():
            for name in names:
                register(event_type, self.handler(name), name=name)
