"""`ctx.attempt`, `ctx.is_replay`, and the "count once" recipe of docs/writing-a-plugin.md:
a row keyed on the Stripe event id, written in the run's transaction, counts an event once
across failed attempts, retries, redeliveries and deliberate re-runs."""

from __future__ import annotations

from typing import Any

from payhook import Event, HandlerContext, Register, hookimpl
from payhook.testing import MakePayhook, store_backends
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel, col, select

pytestmark = store_backends


class CountedEvent(SQLModel, table=True):
    """The recipe's ledger: one row per (tenant, Stripe event) counted."""

    __tablename__ = "counting_event"
    __table_args__ = (UniqueConstraint("tenant", "stripe_event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant: str
    stripe_event_id: str


class Counter:
    """Counts paid events once (the recipe), and records what each execution saw."""

    def __init__(self, fail_attempts: set[int]) -> None:
        self.fail_attempts = fail_attempts
        self.executions: list[tuple[int, bool]] = []  # (ctx.attempt, ctx.is_replay)
        self.announced: list[str] = []  # what after-commit work saw: once per event

    def paid(self, event: Event, ctx: HandlerContext) -> None:
        self.executions.append((ctx.attempt, ctx.is_replay))
        counted = ctx.session.exec(
            select(CountedEvent).where(
                CountedEvent.tenant == ctx.tenant.slug, CountedEvent.stripe_event_id == event.id
            )
        ).first()
        if counted is None:
            ctx.session.add(CountedEvent(tenant=ctx.tenant.slug, stripe_event_id=event.id))
            ctx.after_commit(self.announced.append, event.id)
        if ctx.attempt in self.fail_attempts:
            raise RuntimeError("the ledger service is down")  # rolls back the row above

    @hookimpl
    def register_handlers(self, register: Register) -> None:
        register("payment_intent.succeeded", self.paid, name="paid")


def counted(harness: Any) -> list[str]:
    with harness.session() as session:
        return [
            row.stripe_event_id for row in session.exec(select(CountedEvent).order_by(col(CountedEvent.id)))
        ]


def test_an_event_is_counted_once_across_retries_and_deliberate_reruns(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    counter = Counter(fail_attempts={1})
    harness = make_payhook({"counter": counter})
    SQLModel.metadata.create_all(harness.store.engine, tables=[CountedEvent.__table__])  # type: ignore[attr-defined]
    event = stripe_event("payment_intent.succeeded")

    [run] = harness.send(event)  # attempt 1 writes its row, then fails: the row is rolled back
    assert (run.status, counted(harness)) == ("failed", [])
    harness.process(include_scheduled=True)  # attempt 2 succeeds
    harness.send(event, expect="duplicate")  # Stripe redelivers: nothing runs
    harness.rerun(event["id"])  # an operator re-runs the succeeded run: attempt 3, a replay
    harness.rerun(event["id"])  # and again: attempt 4

    assert counter.executions == [(1, False), (2, False), (3, True), (4, True)]
    # Counting "when ctx.attempt == 1" would have counted nothing (that attempt rolled back),
    # counting "unless ctx.is_replay" nothing on a replayed run that had never succeeded; the
    # ledger row counts it exactly once.
    assert counted(harness) == [event["id"]]
    assert counter.announced == [event["id"]]
    [run] = harness.runs(event["id"])
    assert (run.status, run.attempts, run.replay_count) == ("succeeded", 4, 2)


def test_a_replayed_dead_run_is_a_replay_that_still_counts_once(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    counter = Counter(fail_attempts={1, 2})
    harness = make_payhook({"counter": counter}, processing={"max_attempts": 2})
    SQLModel.metadata.create_all(harness.store.engine, tables=[CountedEvent.__table__])  # type: ignore[attr-defined]
    event = stripe_event("payment_intent.succeeded")

    [run] = harness.send(event, include_scheduled=True)
    assert (run.status, counted(harness)) == ("dead", [])
    harness.rerun(event["id"])  # the operator replays the dead run once the service is back

    assert counter.executions == [(1, False), (2, False), (3, True)]
    assert counted(harness) == [event["id"]]
    assert counter.announced == [event["id"]]
