"""Two payments of one order handled at the same moment: by two worker threads of one app,
or by two apps (two worker processes) on one database.

On PostgreSQL the handlers' transactions really overlap: a `run_handler` wrapper keeps the
first payment's transaction open, after its handler ran, until the second payment's handler
is waiting for the order's row lock (or, were there no lock, has finished). Only then does
the first commit. Nothing depends on timing: the waits are for states, and bounded.

SQLite has one writer, so the two transactions take turns; the test shows they do, without
"database is locked" failures, whichever goes first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from payhook import Event, HandlerContext, hookimpl
from payhook.testing import ClaimedRun, MakePayhook, PayhookHarness, RunOutcome, store_backends
from registration_events import intent_event
from registration_testkit import TENANT, Conference, HookRecorder
from sqlalchemy import Engine, text

import payhook_registration

pytestmark = store_backends

# Bounds for waiting on another thread; reaching one fails the test, it never passes it.
PATIENCE = 30.0


class OverlapGate:
    """Holds the first payment's transaction open until the second is blocked behind it."""

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine  # None on SQLite: nothing to arrange
        self.first = ""
        self.first_handled = threading.Event()
        self.second_done = threading.Event()
        self.second_waited = False

    @hookimpl(wrapper=True)
    def run_handler(self, handler: Any, event: Event, ctx: HandlerContext) -> Generator[None, Any, Any]:
        if self.engine is None:
            return (yield)
        if event.id == self.first:
            try:
                return (yield)  # the order is locked and the payment written, not committed
            finally:
                self.first_handled.set()
                self._until_second_is_blocked_or_done()
        if not self.first_handled.wait(PATIENCE):
            raise AssertionError("the first payment's handler never ran")
        try:
            return (yield)
        finally:
            self.second_done.set()

    def _until_second_is_blocked_or_done(self) -> None:
        deadline = time.monotonic() + PATIENCE
        while not self.second_done.is_set():
            if self._lock_waiters() > 0:
                self.second_waited = True
                return
            if time.monotonic() > deadline:
                raise AssertionError("the second payment neither waited for the order nor finished")
            time.sleep(0.005)

    def _lock_waiters(self) -> int:
        """Sessions of this test's database waiting for a lock (the order's row lock)."""
        assert self.engine is not None
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def make_apps(
    make_payhook: MakePayhook, backend: str, count: int
) -> tuple[list[PayhookHarness], HookRecorder, OverlapGate]:
    hooks = HookRecorder()
    gate = OverlapGate(None)
    plugins = {"registration": payhook_registration, "recorder": hooks, "gate": gate}
    # The gate wraps run_handler, a hook called for the tenant's plugins only: enable it too.
    tenants = {TENANT: {"plugins": ["registration", "recorder", "gate"]}}
    harnesses = [make_payhook(plugins, tenants=tenants) for _ in range(count)]
    if backend == "postgresql":
        gate.engine = harnesses[0].store.engine
    return harnesses, hooks, gate


def run_concurrently(claims: list[tuple[PayhookHarness, ClaimedRun]]) -> list[RunOutcome]:
    """Execute each claimed run in a thread of its own, all started together."""
    start = threading.Barrier(len(claims))

    def execute(harness: PayhookHarness, run: ClaimedRun) -> RunOutcome:
        start.wait(PATIENCE)
        return harness.execute(run)

    with ThreadPoolExecutor(len(claims)) as pool:
        futures = [pool.submit(execute, harness, run) for harness, run in claims]
        return [future.result(PATIENCE * 2) for future in futures]


@pytest.mark.parametrize("workers", ["threads", "apps"])
@pytest.mark.parametrize(
    ("amounts", "paid_by_each"),
    [((1000, 1000), "half"), ((2000, 2000), "all")],
    ids=["two-halves", "paid-twice"],
)
def test_two_payments_of_one_order_at_once(
    make_payhook: MakePayhook,
    payhook_backend: str,
    workers: str,
    amounts: tuple[int, int],
    paid_by_each: str,
) -> None:
    harnesses, hooks, gate = make_apps(make_payhook, payhook_backend, 2 if workers == "apps" else 1)
    conference = Conference(harnesses[0], hooks)
    order_id = conference.order("20.00")
    first = intent_event("succeeded", order_id, "pi_race_first", amount=amounts[0])
    second = intent_event("succeeded", order_id, "pi_race_second", amount=amounts[1])
    for event in (first, second):
        assert harnesses[0].deliver(event).json()["status"] == "accepted"
    gate.first = first["id"]

    # Each run claimed by its own worker: two threads of one app, or one thread in each app.
    claims = []
    for index, event in enumerate((first, second)):
        harness = harnesses[index % len(harnesses)]
        [claimed] = harness.claim(event["id"])
        claims.append((harness, claimed))
    outcomes = run_concurrently(claims)

    assert [outcome.status for outcome in outcomes] == ["succeeded", "succeeded"]
    assert harnesses[0].failures() == []
    payments = conference.payments(order_id)
    assert sorted((p.stripe_payment_intent_id, p.status, p.amount) for p in payments) == [
        ("pi_race_first", "succeeded", Decimal(amounts[0]) / 100),
        ("pi_race_second", "succeeded", Decimal(amounts[1]) / 100),
    ]
    assert conference.get(order_id).status == "paid"
    assert hooks.paid == [(order_id, "paid", TENANT)]
    if paid_by_each == "half":
        assert hooks.attention == []
    else:
        # Whichever came second found the order paid: recorded, and a human is asked.
        [(attention_id, attention_status, reason)] = hooks.attention
        assert (attention_id, attention_status) == (order_id, "paid")
        assert "which is paid; the payment was recorded and the order left unchanged" in reason
        if payhook_backend == "postgresql":
            assert reason.startswith("payment pi_race_second succeeded")
    if payhook_backend == "postgresql":
        assert gate.second_waited, "the second payment's handler did not wait for the first's commit"
