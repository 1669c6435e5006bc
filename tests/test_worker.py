"""Worker shutdown: queued runs go back untouched, stuck ones are handed back as failed attempts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from typing import Any

import pytest
from payhook import hookimpl
from payhook.execute.worker import SuccessMarks, Worker
from payhook.testing import PayhookHarness, store_backends, wait_until

from .helpers import RecordingPlugin, create_effect_table


# The blocked handler has not written yet, so on SQLite too it holds no lock the hand-back needs.
@store_backends
def test_stop_releases_queued_runs_and_hands_back_stuck_ones(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.gate = threading.Event()  # every handler call blocks until the test opens it
    harness: PayhookHarness = make_payhook(
        {"rec": plugin}, processing={"worker": True, "concurrency": 1, "lease_seconds": 300}
    )
    create_effect_table(harness.store.engine)
    for _ in range(3):
        harness.deliver(stripe_event("payment_intent.succeeded"))
    # One run executing, one claimed and queued behind it (twice the concurrency), one due.
    wait_until(lambda: len(plugin.calls) == 1, what="the first handler call")
    wait_until(
        lambda: sorted(run.status for run in harness.runs()) == ["pending", "running", "running"],
        what="one run executing, one queued, one due",
    )
    worker = harness.app.payhook.worker
    assert worker is not None

    handed_back = harness.client.portal.call(worker.stop, 0.2)
    plugin.gate.set()

    assert handed_back == 1
    by_status = sorted((run.status, run.attempts) for run in harness.runs())
    assert by_status == [("failed", 1), ("pending", 0), ("pending", 0)]
    [failure] = harness.failures()
    assert failure.error_type == "payhook.WorkerStopped"
    assert len(plugin.calls) == 1  # the queued run never started


@pytest.mark.parametrize("waiting_in", ["idle sleep", "claim", "running handlers"])
def test_cancelling_the_worker_ends_it_within_a_second(
    make_payhook: Any, stripe_event: Any, waiting_in: str
) -> None:
    plugin = RecordingPlugin("rec")
    plugin.gate = threading.Event()
    harness: PayhookHarness = make_payhook({"rec": plugin}, processing={"poll_interval": 3600})
    create_effect_table(harness.store.engine)
    payhook = harness.app.payhook
    worker = Worker(payhook.processor, concurrency=1, batch_size=4, poll_interval=3600)
    claim_started = threading.Event()
    claim_may_finish = threading.Event()
    if waiting_in == "claim":
        real_claim = payhook.processor.claim

        def slow_claim(limit: int, event_id: int | None = None) -> Any:
            claim_started.set()
            claim_may_finish.wait(10)
            return real_claim(limit, event_id)

        payhook.processor.claim = slow_claim  # type: ignore[method-assign]
    if waiting_in == "running handlers":
        harness.deliver(stripe_event("payment_intent.succeeded"))

    async def scenario() -> float:
        task = asyncio.create_task(worker.run())
        if waiting_in == "claim":
            await asyncio.to_thread(claim_started.wait, 10)
        elif waiting_in == "running handlers":
            await asyncio.to_thread(wait_until, lambda: len(plugin.calls) == 1)
        else:
            await asyncio.sleep(0.05)  # let it reach its idle sleep
        started = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    try:
        took = asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        claim_may_finish.set()
        plugin.gate.set()
    assert took < 1.0
    if waiting_in == "claim":
        # What the interrupted claim took is given back, not left running until its lease ends.
        harness.deliver(stripe_event("payment_intent.succeeded"))
        wait_until(lambda: all(run.status == "pending" for run in harness.runs()), what="released runs")


def test_one_app_object_serves_two_lifespans(make_payhook: Any, stripe_event: Any) -> None:
    from starlette.testclient import TestClient

    harness: PayhookHarness = make_payhook({"rec": RecordingPlugin("rec")}, processing={"worker": True})
    create_effect_table(harness.store.engine)
    harness.close()  # the first lifespan ends
    for _ in range(2):
        with TestClient(harness.app) as client:
            harness.client = client
            answer = harness.deliver(stripe_event("payment_intent.succeeded"))
            assert answer.json()["status"] == "accepted"
            wait_until(lambda: all(run.status == "succeeded" for run in harness.runs()), what="runs done")
    assert len(harness.events()) == 2


@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_a_separate_worker_on_postgresql_wakes_on_notify_not_on_its_poll(
    make_payhook: Any, stripe_event: Any
) -> None:
    from payhook.receive.runtime import Payhook

    plugin = RecordingPlugin("rec")
    receiver: PayhookHarness = make_payhook({"rec": plugin})  # stores; runs no handlers
    create_effect_table(receiver.store.engine)
    config = dataclasses.replace(
        receiver.config, processing=dataclasses.replace(receiver.config.processing, poll_interval=3600.0)
    )
    worker = Payhook(config, {"rec": plugin}, run_worker=True)

    async def scenario() -> None:
        await worker.start()
        try:
            # The worker's first claim finds nothing; from then on only a NOTIFY can wake it
            # within the hour-long poll interval.
            await asyncio.to_thread(wait_until, lambda: worker.worker is not None)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(receiver.deliver, stripe_event("payment_intent.succeeded"))
            await asyncio.to_thread(
                wait_until, lambda: [run.status for run in receiver.runs()] == ["succeeded"], timeout=10
            )
        finally:
            await worker.stop()

    asyncio.run(scenario())


class WritesNothing:
    """A handler that never opens its session, so its runs' marks go to the mark writer."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def handle(self, event: Any, ctx: Any) -> None:
        with self.lock:
            self.calls.append(event.id)

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register("payment_intent.succeeded", self.handle, name="handle")


@store_backends
def test_runs_that_wrote_nothing_are_marked_in_batches_each_exactly_once(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = WritesNothing()
    harness: PayhookHarness = make_payhook({"quiet": plugin}, processing={"worker": True, "concurrency": 4})
    batches: list[int] = []
    processor = harness.app.payhook.processor
    real = processor.mark_succeeded

    def counted(finished: Any) -> Any:
        batches.append(len(finished))
        return real(finished)

    processor.mark_succeeded = counted  # type: ignore[method-assign]
    sent = [stripe_event("payment_intent.succeeded") for _ in range(40)]
    for event in sent:
        harness.deliver(event)
    wait_until(
        lambda: [run.status for run in harness.runs()] == ["succeeded"] * 40, what="every run to succeed"
    )
    assert sorted(plugin.calls) == sorted(event["id"] for event in sent)
    assert sum(batches) == 40


@store_backends
def test_stop_commits_the_marks_still_waiting(make_payhook: Any, stripe_event: Any) -> None:
    plugin = WritesNothing()
    harness: PayhookHarness = make_payhook({"quiet": plugin}, processing={"worker": True, "concurrency": 2})
    processor = harness.app.payhook.processor
    real = processor.mark_succeeded
    writing, may_write = threading.Event(), threading.Event()

    def held_back(finished: Any) -> Any:
        writing.set()
        may_write.wait(10)
        return real(finished)

    processor.mark_succeeded = held_back  # type: ignore[method-assign]
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event)
    wait_until(writing.is_set, what="the mark writer to take the mark")
    assert [run.status for run in harness.runs()] == ["running"]
    worker = harness.app.payhook.worker
    assert worker is not None
    threading.Timer(0.3, may_write.set).start()

    handed_back = harness.client.portal.call(worker.stop, 5.0)

    assert handed_back == 0
    assert [run.status for run in harness.runs()] == ["succeeded"]
    assert plugin.calls == [event["id"]]


@store_backends
def test_a_mark_handed_over_after_the_writer_closed_is_committed_by_its_runner(
    make_payhook: Any, stripe_event: Any
) -> None:
    harness: PayhookHarness = make_payhook({"quiet": WritesNothing()})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    processor = harness.app.payhook.processor
    marks = SuccessMarks(processor, limit=4)
    marks.start()
    assert marks.close(timeout=5)
    [run] = processor.claim(10)

    processor.execute_or_defer(run, marks.add)

    assert [r.status for r in harness.runs()] == ["succeeded"]
