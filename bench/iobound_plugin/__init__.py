"""The I/O-bound benchmark plugin (bench/io_bound.py): each run asks Stripe for the payment
intent's current state with `ctx.fetch_latest()`, then upserts one row with its status.

Not installed: bench/io_bound.py hands it to its worker by name. `PAYHOOK_IOBOUND_CPU_MS`
(read at import) replaces the API call with that many milliseconds of pure-Python work, the
CPU-bound handler that runner growth must leave alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

import payhook
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel

__all__ = ["HANDLED", "HANDLER", "IoboundHit", "create_tables", "record_latest"]

HANDLED = "payment_intent.succeeded"
HANDLER = "record_latest"
CPU_ENV = "PAYHOOK_IOBOUND_CPU_MS"
CPU_SECONDS = float(os.environ.get(CPU_ENV) or 0) / 1000


class IoboundHit(SQLModel, table=True):
    """One row per handled event; the key makes a re-run overwrite, not duplicate."""

    __tablename__ = "iobound_hit"

    tenant: str = Field(primary_key=True, max_length=63)
    stripe_event_id: str = Field(primary_key=True, max_length=255)
    status: str = Field(max_length=64)


def create_tables(engine: Engine) -> None:
    """Create `iobound_hit` (the benchmark calls this; a real plugin ships a migration)."""
    SQLModel.metadata.create_all(engine, tables=[IoboundHit.__table__])  # type: ignore[attr-defined]


def busy(seconds: float) -> int:
    """Spin the interpreter (holding the GIL) for `seconds`."""
    deadline = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < deadline:
        spins += sum(range(50))
    return spins


def record_latest(event: Any, ctx: Any) -> None:
    if CPU_SECONDS:
        busy(CPU_SECONDS)
        status = "computed"
    else:
        # Before the first statement: the wait holds no database transaction open.
        status = str(ctx.fetch_latest().status)
    ctx.session.merge(IoboundHit(tenant=ctx.tenant.slug, stripe_event_id=event.id, status=status))


@payhook.hookimpl
def register_handlers(register: Any) -> None:
    register(HANDLED, record_latest, name=HANDLER)
