"""payhook.sql: statements a handler runs with ctx.execute, in its run's transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from payhook import HandlerContext, UTCDateTime, hookimpl
from payhook.sql import Statement, insert_keys
from payhook.testing import PayhookHarness, fresh_event_id, store_backends
from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table, bindparam, func, select

WAIT_LIMIT = 30.0

ITEMS = Table(
    "testing_sql_item",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("key", String(80), nullable=False, unique=True),
    Column("amount", Numeric(12, 3), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)
ADD = Statement(ITEMS.insert(), keys=insert_keys(ITEMS))
COUNT = Statement(select(func.count()).select_from(ITEMS))
BY_KEY = Statement(select(ITEMS.c.amount, ITEMS.c.at).where(ITEMS.c.key == bindparam("key")))

AT = datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
AMOUNT = Decimal("12.345")

Handler = Callable[[Any, HandlerContext], None]


class Plugin:
    """Registers `handlers` by name for payment_intent.succeeded."""

    def __init__(self, **handlers: Handler) -> None:
        self.handlers = handlers

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        for name, handler in self.handlers.items():
            handler.__name__ = handler.__qualname__ = name  # type: ignore[attr-defined]
            register("payment_intent.succeeded", handler)


def harness_with(make_payhook: Any, **handlers: Handler) -> PayhookHarness:
    harness: PayhookHarness = make_payhook({"sq": Plugin(**handlers)}, processing={"max_attempts": 3})
    ITEMS.create(harness.store.engine)
    return harness


def add(ctx: HandlerContext, key: str, amount: Decimal = AMOUNT, at: datetime = AT) -> None:
    ctx.execute(ADD, key=key, amount=amount, at=at)


def stored(harness: PayhookHarness) -> list[tuple[Any, ...]]:
    """Every item, read back through SQLAlchemy as the ORM would read it."""
    with harness.store.engine.connect() as conn:
        rows = conn.execute(select(ITEMS.c.key, ITEMS.c.amount, ITEMS.c.at).order_by(ITEMS.c.key))
        return [tuple(row) for row in rows]


@store_backends
def test_a_handlers_statements_commit_with_its_run(make_payhook: Any, stripe_event: Any) -> None:
    def write(event: Any, ctx: HandlerContext) -> None:
        ctx.lock_for_write()
        add(ctx, "a")
        add(ctx, "b")
        [(count,)] = ctx.rows(COUNT)  # its own writes, in its own transaction
        assert count == 2

    harness = harness_with(make_payhook, write=write)
    [run] = harness.send(stripe_event("payment_intent.succeeded"))
    assert run.status == "succeeded", run.last_error
    assert [key for key, *_ in stored(harness)] == ["a", "b"]


@store_backends
def test_a_handler_that_raises_leaves_nothing_of_its_statements(make_payhook: Any, stripe_event: Any) -> None:
    def write_then_fail(event: Any, ctx: HandlerContext) -> None:
        add(ctx, "a")
        assert ctx.changed(Statement(ITEMS.update().values(amount=Decimal(1)))) == 1
        raise ValueError("the card service said no")

    harness = harness_with(make_payhook, write_then_fail=write_then_fail)
    [run] = harness.send(stripe_event("payment_intent.succeeded"))
    assert (run.status, run.last_error_type) == ("failed", "ValueError")
    assert stored(harness) == []


@store_backends
def test_a_unique_key_violation_fails_the_run_as_through_the_orm(
    make_payhook: Any, stripe_event: Any
) -> None:
    def through_sql(event: Any, ctx: HandlerContext) -> None:
        add(ctx, f"sql-{event.id}")
        add(ctx, f"sql-{event.id}")

    def through_orm(event: Any, ctx: HandlerContext) -> None:
        for _ in range(2):
            ctx.session.execute(ITEMS.insert(), {"key": f"orm-{event.id}", "amount": AMOUNT, "at": AT})

    harness = harness_with(make_payhook, through_sql=through_sql, through_orm=through_orm)
    event = stripe_event("payment_intent.succeeded")
    runs = {run.handler.rsplit(".", 1)[-1]: run for run in harness.send(event)}
    sql, orm = runs["through_sql"], runs["through_orm"]
    assert (sql.status, sql.last_error_type) == ("failed", "sqlalchemy.exc.IntegrityError")
    assert (orm.status, orm.last_error_type) == ("failed", "sqlalchemy.exc.IntegrityError")
    # The driver's error, the statement and its parameters, in the same words either way.
    assert sql.last_error is not None and orm.last_error is not None
    assert sql.last_error == orm.last_error.replace("orm-", "sql-")
    assert stored(harness) == []  # each run's first insert was rolled back with it
    # The connection is fine: the next attempts run on it and fail the same way.
    harness.process(include_scheduled=True, rounds=1)
    assert {run.last_error_type for run in harness.runs()} == {"sqlalchemy.exc.IntegrityError"}


@store_backends
def test_datetimes_and_decimals_are_converted_as_by_the_orm(make_payhook: Any, stripe_event: Any) -> None:
    read: list[Any] = []

    def write(event: Any, ctx: HandlerContext) -> None:
        ctx.lock_for_write()
        add(ctx, "sql")
        ctx.session.execute(ITEMS.insert(), {"key": "orm", "amount": AMOUNT, "at": AT})
        read.append(ctx.rows(BY_KEY, key="sql"))

    harness = harness_with(make_payhook, write=write)
    [run] = harness.send(stripe_event("payment_intent.succeeded"))
    assert run.status == "succeeded", run.last_error
    # Read back as SQLAlchemy gives them: a Decimal, an aware datetime in UTC.
    assert read == [[(AMOUNT, AT.astimezone(UTC))]]
    assert stored(harness) == [("orm", AMOUNT, AT.astimezone(UTC)), ("sql", AMOUNT, AT.astimezone(UTC))]
    # Stored exactly as the ORM stores them (on SQLite: the same text).
    with harness.store.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT key, amount, at FROM testing_sql_item ORDER BY key").all()
    assert raw[0][1:] == raw[1][1:]


class ReadThenWrite:
    """Counts the items through ctx.rows, lets another writer in, then adds one."""

    def __init__(self) -> None:
        self.calls = 0
        self.after_read = threading.Event()
        self.go_on = threading.Event()

    def __call__(self, event: Any, ctx: HandlerContext) -> None:
        self.calls += 1
        [(seen,)] = ctx.rows(COUNT)
        if self.calls == 1:
            self.after_read.set()
            self.go_on.wait(WAIT_LIMIT)
        add(ctx, f"saw-{seen}")


def test_a_handler_whose_reads_went_stale_runs_again_as_through_the_orm(
    make_payhook: Any, stripe_event: Any
) -> None:
    handler = ReadThenWrite()
    harness = harness_with(make_payhook, bump=handler)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    processor = harness.app.payhook.processor
    [run] = processor.claim(10)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(processor.execute(run)))
    worker.start()
    try:
        assert handler.after_read.wait(WAIT_LIMIT)
        with harness.store.transaction() as conn:  # another writer, after the handler's read
            conn.execute(ITEMS.insert(), {"key": fresh_event_id(), "amount": AMOUNT, "at": AT})
    finally:
        handler.go_on.set()
        worker.join(WAIT_LIMIT)
    assert outcome[0].status == "succeeded"
    assert handler.calls == 2  # the stale attempt was rolled back and ran again
    assert [key for key, *_ in stored(harness) if key.startswith("saw-")] == ["saw-1"]
    assert harness.failures() == []
