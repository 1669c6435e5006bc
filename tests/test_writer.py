"""The ingest writer and the event log: many deliveries per transaction, each key stored
once, one bad delivery fails alone, every delivery answered in time, and the writer
survives restarts and crashes of its own task."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from payhook.config import DatabaseConfig
from payhook.plugins.types import Handler
from payhook.receive.envelope import parse_event, to_delivery
from payhook.receive.writer import BatchWriter
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.eventlog import RUNS_CHANNEL, Delivery, EventLog, IngestResult
from payhook.store.migrations import upgrade
from payhook.store.runs import runs_of
from payhook.testing import store_backends


class PickyLog(EventLog):
    """A real event log that refuses any batch holding a delivery marked `poison`."""

    def __init__(self, url: str) -> None:
        store = Store(DatabaseConfig(url=url))
        super().__init__(store, runs_of(store))
        self.batches: list[int] = []

    def append(self, deliveries: Sequence[Delivery], *, deadline: float | None = None) -> list[IngestResult]:
        self.batches.append(len(deliveries))
        if any(delivery.type == "poison" for delivery in deliveries):
            raise ValueError("this delivery cannot be stored")
        return super().append(deliveries, deadline=deadline)


def delivery(stripe_event: Any, event_type: str = "customer.created") -> Delivery:
    event = stripe_event("customer.created", type=event_type)
    body = json.dumps(event).encode()
    parsed, payload = parse_event(body)
    return to_delivery("t", parsed, payload, 0, ())


async def submit_all(writer: BatchWriter, deliveries: list[Delivery]) -> list[Any]:
    writer.start()
    try:
        return await asyncio.gather(*(writer.submit(d) for d in deliveries), return_exceptions=True)
    finally:
        await writer.stop()


@store_backends
def test_concurrent_deliveries_share_transactions_and_a_bad_one_fails_alone(
    payhook_database_url: str, stripe_event: Any
) -> None:
    log = PickyLog(payhook_database_url)
    upgrade(log.store.engine, include_plugins=False)
    deliveries = [delivery(stripe_event) for _ in range(20)]
    deliveries.insert(7, delivery(stripe_event, "poison"))
    results = asyncio.run(submit_all(BatchWriter(log), deliveries))
    assert isinstance(results[7], ValueError)
    assert [r.status for i, r in enumerate(results) if i != 7] == ["ignored"] * 20
    assert log.batches[0] > 1  # concurrent submissions were grouped
    log.store.dispose()


def test_store_down_fails_the_whole_batch_at_once(stripe_event: Any) -> None:
    store = Store(DatabaseConfig(url="postgresql+psycopg://postgres@127.0.0.1:1/none", connect_timeout=1))
    deliveries = [delivery(stripe_event) for _ in range(10)]
    results = asyncio.run(submit_all(BatchWriter(EventLog(store, runs_of(store))), deliveries))
    assert all(isinstance(result, StoreUnavailable) for result in results)


@store_backends
def test_one_writer_started_stopped_and_started_again(payhook_database_url: str, stripe_event: Any) -> None:
    log = PickyLog(payhook_database_url)
    upgrade(log.store.engine, include_plugins=False)
    writer = BatchWriter(log)
    first = asyncio.run(submit_all(writer, [delivery(stripe_event)]))
    second = asyncio.run(submit_all(writer, [delivery(stripe_event)]))
    assert [r.status for r in first + second] == ["ignored", "ignored"]
    log.store.dispose()


def test_a_crashed_writer_answers_503_then_recovers(tmp_path: Any, stripe_event: Any) -> None:
    log = PickyLog(f"sqlite:///{tmp_path / 'crash.db'}")
    upgrade(log.store.engine, include_plugins=False)
    writer = BatchWriter(log)
    real_write = writer._write
    crashes = []

    def crash_once(batch: Any) -> Any:
        if not crashes:
            crashes.append(len(batch))
            raise RuntimeError("the writer's own code failed")
        return real_write(batch)

    writer._write = crash_once  # type: ignore[method-assign]

    async def scenario() -> tuple[Any, Any]:
        writer.start()
        try:
            crashed = await asyncio.gather(writer.submit(delivery(stripe_event)), return_exceptions=True)
            recovered = await writer.submit(delivery(stripe_event))
            return crashed, recovered
        finally:
            await writer.stop()

    crashed, recovered = asyncio.run(scenario())
    assert isinstance(crashed[0], StoreUnavailable)
    assert recovered.status == "ignored"
    assert crashes == [1]
    log.store.dispose()


class StuckLog(PickyLog):
    """A real event log whose writes wait until the test lets them through."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list[str] = []

    def append(self, deliveries: Sequence[Delivery], *, deadline: float | None = None) -> list[IngestResult]:
        self.entered.set()
        self.release.wait(30)
        self.written += [d.stripe_event_id for d in deliveries]
        return super().append(deliveries, deadline=deadline)


def test_a_stuck_writer_answers_every_delivery_within_the_timeout(tmp_path: Any, stripe_event: Any) -> None:
    log = StuckLog(f"sqlite:///{tmp_path / 'stuck.db'}")
    upgrade(log.store.engine, include_plugins=False)
    writer = BatchWriter(log, timeout=0.3)
    stuck, behind, after = (
        delivery(stripe_event),
        [delivery(stripe_event) for _ in range(3)],
        delivery(stripe_event),
    )

    async def answer(submitted: Any) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            return await submitted, time.monotonic() - started
        except StoreUnavailable as exc:
            return exc, time.monotonic() - started

    async def scenario() -> tuple[list[tuple[Any, float]], Any]:
        writer.start()
        try:
            first = asyncio.ensure_future(answer(writer.submit(stuck)))
            while not log.entered.is_set():  # the writer's thread holds the first delivery
                await asyncio.sleep(0.005)
            answers = [await first, *[await answer(writer.submit(d)) for d in behind]]
            log.release.set()
            return answers, await writer.submit(after)
        finally:
            log.release.set()
            await writer.stop()

    answers, recovered = asyncio.run(scenario())
    assert all(isinstance(outcome, StoreUnavailable) for outcome, _ in answers), answers
    assert all(seconds < 0.3 + 3 for _, seconds in answers), answers
    assert recovered.status == "ignored"
    # The stuck transaction went on (a late commit: Stripe's retry is then a duplicate), but
    # the deliveries answered 503 while they waited behind it were never written.
    assert log.written == [stuck.stripe_event_id, after.stripe_event_id]
    log.store.dispose()


def handled(stripe_event: Any, stripe_id: str | None = None) -> Delivery:
    """A delivery that one handler applies to (creates one run)."""
    event = stripe_event("payment_intent.succeeded")
    if stripe_id is not None:
        event["id"] = stripe_id
    parsed, payload = parse_event(json.dumps(event).encode())
    return to_delivery("t", parsed, payload, 0, (Handler("rec", "apply", "payment_intent.succeeded", print),))


@store_backends
def test_one_batch_stores_each_key_once_and_answers_each_delivery(
    payhook_database_url: str, stripe_event: Any
) -> None:
    store = Store(DatabaseConfig(url=payhook_database_url))
    upgrade(store.engine, include_plugins=False)
    log = EventLog(store, runs_of(store))
    [stored_before] = log.append([handled(stripe_event)])
    with store.transaction() as conn:  # its run died: a redelivery re-arms it
        conn.exec_driver_sql("UPDATE payhook_handler_run SET status = 'dead'")
    redelivered = handled(stripe_event, next(iter(stored_ids(store))))
    new, plain = handled(stripe_event), delivery(stripe_event)

    results = log.append([new, redelivered, plain, new, redelivered, plain])

    assert [(r.status, r.runs, r.rearmed) for r in results] == [
        ("accepted", 1, 0),
        ("duplicate", 0, 1),
        ("ignored", 0, 0),
        ("duplicate", 0, 0),
        ("duplicate", 0, 0),
        ("duplicate", 0, 0),
    ]
    assert results[1].event_id == results[4].event_id == stored_before.event_id
    assert results[0].event_id == results[3].event_id and results[2].event_id == results[5].event_id
    assert len(stored_ids(store)) == 3
    with store.transaction() as conn:
        statuses = conn.exec_driver_sql("SELECT status FROM payhook_handler_run ORDER BY id").scalars().all()
    assert statuses == ["pending", "pending"]  # the re-armed one and the new event's
    store.dispose()


def stored_ids(store: Store) -> set[str]:
    with store.transaction() as conn:
        return set(conn.exec_driver_sql("SELECT stripe_event_id FROM payhook_event").scalars())


@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_new_runs_notify_listening_workers_at_commit(payhook_database_url: str, stripe_event: Any) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    store = Store(DatabaseConfig(url=payhook_database_url))
    upgrade(store.engine, include_plugins=False)
    log = EventLog(store, runs_of(store))
    plain_url = (
        make_url(payhook_database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with psycopg.connect(plain_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {RUNS_CHANNEL}")
        log.append([delivery(stripe_event) for _ in range(3)])  # no runs: nothing to wake for
        assert list(listener.notifies(timeout=0.5)) == []
        log.append([handled(stripe_event) for _ in range(3)])
        woken = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in woken] == [RUNS_CHANNEL]
    store.dispose()


@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_the_pipelined_ingest_hands_back_connections_in_transactional_mode(
    payhook_database_url: str, stripe_event: Any
) -> None:
    """Ingest runs its PostgreSQL transaction in autocommit mode to pipeline BEGIN; a handler
    that got the same connection afterwards must not autocommit its writes one by one."""
    store = Store(DatabaseConfig(url=payhook_database_url, pool_size=1))
    upgrade(store.engine, include_plugins=False)
    log = EventLog(store, runs_of(store))
    log.append([handled(stripe_event), delivery(stripe_event)])
    with pytest.raises(RuntimeError), store.pipelined_transaction() as txn:  # ...and a failed one
        txn.cursor.execute("SELECT 1")
        raise RuntimeError("the batch failed")
    handler = store.handler_transaction()
    try:
        assert handler.session.connection().connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
    finally:
        handler.close()
    store.dispose()


class SlowLog(PickyLog):
    """Commits that take `seconds` longer, as an fsync on a slow disk does."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(url)
        self.seconds = seconds

    def append(self, deliveries: Sequence[Delivery], *, deadline: float | None = None) -> list[IngestResult]:
        time.sleep(self.seconds)
        return super().append(deliveries, deadline=deadline)


@store_backends
def test_a_closed_loop_of_deliveries_commits_together_not_in_halves(
    payhook_database_url: str, stripe_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow commit and a window far above any scheduling delay: only the rule is tested.
    monkeypatch.setattr("payhook.receive.writer.GATHER_LIMIT", 30.0)
    log = SlowLog(payhook_database_url, seconds=0.3)
    upgrade(log.store.engine, include_plugins=False)
    writer = BatchWriter(log)

    async def scenario() -> None:
        writer.start()
        try:
            # Eight in flight at once: one commit, which learns that eight are in flight.
            await asyncio.gather(*(writer.submit(delivery(stripe_event)) for _ in range(8)))

            # Four come back at once and four a few turns of the loop later, as answered
            # clients do over a network: the writer waits for the four rather than
            # committing the first four alone.
            async def late() -> IngestResult:
                for _ in range(5):
                    await asyncio.sleep(0)
                return await writer.submit(delivery(stripe_event))

            early = [writer.submit(delivery(stripe_event)) for _ in range(4)]
            await asyncio.gather(*early, *(late() for _ in range(4)))
            # Then the load stops: a lone delivery waits out the window once (bounded by
            # the last commit's time), after which the writer expects one at a time.
            started = time.monotonic()
            await writer.submit(delivery(stripe_event))
            assert time.monotonic() - started < 5
            await writer.submit(delivery(stripe_event))
        finally:
            await writer.stop()

    asyncio.run(scenario())
    assert log.batches == [8, 8, 1, 1]
    log.store.dispose()
