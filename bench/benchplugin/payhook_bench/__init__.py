"""The benchmark plugin: each handled payment event writes one row through `ctx.session`.

`PAYHOOK_BENCH_NOOP=1` makes the handler return at once (bench/runcost.py: the core's own
cost per run). `PAYHOOK_BENCH_SLEEP_MS` (read once, at import) makes the handler wait that long before its
write, standing in for a handler that calls a slow API: the scale-out benchmark uses it to
see whether a worker overlaps such waits (`[processing] concurrency`) or serialises them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import payhook
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel

__all__ = ["HANDLED_TYPES", "SLEEP_ENV", "BenchHit", "create_tables", "record_payment"]

HANDLED_TYPES = ("payment_intent.succeeded", "charge.succeeded")
SLEEP_ENV = "PAYHOOK_BENCH_SLEEP_MS"
SLEEP_SECONDS = float(os.environ.get(SLEEP_ENV) or 0) / 1000
# PAYHOOK_BENCH_NOOP=1: the handler does nothing, so a run costs only what the core spends.
NOOP = os.environ.get("PAYHOOK_BENCH_NOOP") == "1"


class BenchHit(SQLModel, table=True):
    """One row per handled event; the key makes a re-run overwrite, not duplicate."""

    __tablename__ = "bench_hit"

    tenant: str = Field(primary_key=True, max_length=63)
    stripe_event_id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=255)
    amount: int | None = None


def create_tables(engine: Engine) -> None:
    """Create `bench_hit` (the benchmark calls this; a real plugin ships a migration)."""
    SQLModel.metadata.create_all(engine, tables=[BenchHit.__table__])  # type: ignore[attr-defined]


def record_payment(event: Any, ctx: Any) -> None:
    if NOOP:
        return
    if SLEEP_SECONDS:
        # Before the first statement: like an API call made before recording its result,
        # the wait holds no database transaction open (the session connects lazily).
        time.sleep(SLEEP_SECONDS)
    # merge() selects by key first, so a handler re-run after a crash stays idempotent.
    amount = getattr(event.data.object, "amount", None)
    ctx.session.merge(
        BenchHit(tenant=ctx.tenant.slug, stripe_event_id=event.id, type=event.type, amount=amount)
    )


@payhook.hookimpl
def register_handlers(register: Any) -> None:
    for event_type in HANDLED_TYPES:
        register(event_type, record_payment)
