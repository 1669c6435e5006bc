"""Statements compiled once per dialect and run on the driver's cursor: payhook's fast SQL path.

SQLAlchemy's per-call execution machinery (and the ORM's unit of work above it) costs several
times the database's own work for a short statement. Statements written once as Core
expressions over the models' tables (so column names and types still come from one place)
are compiled here the first time each dialect runs them, with their parameters' conversions
decided then, and executed on the DBAPI connection.

Handlers use them through `ctx.execute`, `ctx.rows` and `ctx.changed`, in their run's
transaction (see docs/hooks.md); the core's own hot statements use `Compiled` directly.

    from payhook.sql import Statement

    PAY = Statement(update(ORDERS).where(ORDERS.c.id == bindparam("order_id")).values(status="paid"))

    def handler(event, ctx):
        ctx.lock_for_write()
        if not ctx.changed(PAY, order_id=42):
            ...
"""

from payhook.store.compiled import (
    Build,
    Compiled,
    Executor,
    Statement,
    driver_error,
    drop_if_broken,
    insert_keys,
)

__all__ = [
    "Build",
    "Compiled",
    "Executor",
    "Statement",
    "driver_error",
    "drop_if_broken",
    "insert_keys",
]
