"""Inline mode beside the in-process worker: the request owns its event's runs.

`payhook serve` runs a worker in the receiver's process by default. An inline tenant's
request runs its event's runs before answering; the worker must never take them from it
(which once made a failing handler answer 200 `accepted`). These tests run the app with its
lifespan and its worker, as `serve` does (but one, which plays a worker's claim itself).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import httpx
from payhook.store.models import HandlerRun, utcnow
from payhook.testing import PayhookHarness, signed_headers, store_backends, wait_until
from sqlalchemy import update
from sqlmodel import col

from .helpers import RecordingPlugin, create_effect_table, effects

pytestmark = store_backends

INLINE_WITH_WORKER = {
    "mode": "inline",
    "worker": True,
    # The worker's retries come quickly, so the test sees them.
    "max_attempts": 2,
    "backoff_base": 0.05,
    "backoff_cap": 0.1,
}


def is_inline(owner: str | None) -> bool:
    """Whether a run's lease was an inline request's (see Processor.inline_lease)."""
    return owner is not None and owner.endswith(" inline")


def setup(make_payhook: Any, plugin: RecordingPlugin, **processing: Any) -> PayhookHarness:
    harness: PayhookHarness = make_payhook(
        {plugin.name: plugin}, processing={**INLINE_WITH_WORKER, **processing}
    )
    create_effect_table(harness.store.engine)
    return harness


def test_a_failing_inline_handler_is_answered_500_every_time(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("the ledger is down"))
    harness = setup(make_payhook, plugin)
    events = [stripe_event("payment_intent.succeeded") for _ in range(100)]

    answers = [harness.deliver(event) for event in events]

    assert [(a.status_code, a.json().get("error")) for a in answers] == [(500, "handler_failed")] * 100
    # The worker retries each run after its backoff, until it is dead; nobody runs a run twice.
    wait_until(
        lambda: {run.status for run in harness.runs()} == {"dead"} and len(harness.runs()) == 100,
        what="every run to be retried by the worker until dead",
    )
    assert {(run.attempts, run.last_error) for run in harness.runs()} == {(2, "the ledger is down")}
    assert Counter(event_id for _, event_id in plugin.calls) == {event["id"]: 2 for event in events}
    assert Counter((f.run_id, f.attempt) for f in harness.failures()) == {
        (run.id, attempt): 1 for run in harness.runs() for attempt in (1, 2)
    }
    assert effects(harness.store.engine) == []


def test_a_succeeding_inline_handler_has_succeeded_before_the_answer(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    for _ in range(30):
        event = stripe_event("payment_intent.succeeded")
        answer = harness.deliver(event)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        [run] = harness.runs(event["id"])
        # Run by the request itself, under the lease it held from the run's creation.
        assert (run.status, run.attempts) == ("succeeded", 1)
        assert is_inline(run.lease_owner)
        assert [e.stripe_event_id for e in effects(harness.store.engine)][-1] == event["id"]
    assert len(plugin.calls) == 30


def test_a_redelivery_runs_what_is_left_and_answers_for_it(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["good", "bad"]})
    plugin.fail("bad", lambda n: RuntimeError("not yet") if n == 1 else None)
    # No retries by the worker: what runs the failed run again is the redelivery.
    harness = setup(make_payhook, plugin, backoff_base=3600, backoff_cap=3600)
    event = stripe_event("payment_intent.succeeded")

    first = harness.deliver(event)
    assert first.status_code == 500 and first.json()["error"] == "handler_failed"
    assert [(run.handler, run.status) for run in harness.runs()] == [("good", "succeeded"), ("bad", "failed")]

    second = harness.deliver(event)  # Stripe retries: the request takes over the failed run
    assert second.status_code == 200 and second.json()["status"] == "duplicate"
    assert [(run.handler, run.status, run.attempts) for run in harness.runs()] == [
        ("good", "succeeded", 1),
        ("bad", "succeeded", 2),
    ]
    assert is_inline(harness.runs()[1].lease_owner)  # run by the redelivery's request
    assert Counter(name for name, _ in plugin.calls) == {"good": 1, "bad": 2}


def test_a_redelivery_leaves_runs_another_owner_holds_to_it(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["held", "left"]})
    for name in ("held", "left"):
        plugin.fail(name, lambda n: RuntimeError("not yet") if n == 1 else None)
    harness = setup(make_payhook, plugin, worker=False, backoff_base=3600, backoff_cap=3600)
    event = stripe_event("payment_intent.succeeded")
    assert harness.deliver(event).status_code == 500
    held, _ = harness.runs()
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).where(col(HandlerRun.id) == held.id).values(next_attempt_at=utcnow()))
    [worker_claim] = harness.app.payhook.processor.claim(10)  # a worker takes the run due now

    again = harness.deliver(event)

    # The request ran what was waiting, and neither ran nor waited for the worker's run.
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    held, left = harness.runs()
    assert (held.status, held.lease_token) == ("running", worker_claim.lease_token)
    assert (left.status, left.attempts) == ("succeeded", 2) and is_inline(left.lease_owner)
    assert Counter(name for name, _ in plugin.calls) == {"held": 1, "left": 2}
    assert harness.execute(worker_claim).status == "succeeded"
    assert Counter(name for name, _ in plugin.calls) == {"held": 2, "left": 2}


def test_a_redelivery_rearms_dead_runs_and_runs_them_itself(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("bug") if n <= 2 else None)
    harness = setup(make_payhook, plugin)
    event = stripe_event("payment_intent.succeeded")
    assert harness.deliver(event).status_code == 500
    wait_until(lambda: harness.runs()[0].status == "dead", what="the worker's retry to kill the run")

    again = harness.deliver(event)  # after the fix, the operator resends the event

    assert again.status_code == 200 and again.json() == {
        "status": "duplicate",
        "event": event["id"],
        "rearmed": 1,
    }
    [run] = harness.runs()
    assert (run.status, run.attempts, run.attempt_base) == ("succeeded", 3, 2)
    assert is_inline(run.lease_owner)  # run by the redelivery's request, not the worker
    assert len(plugin.calls) == 3


def test_a_cancelled_inline_request_leaves_its_unstarted_runs_to_the_worker(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["first", "second"]})
    plugin.gate = threading.Event()
    harness = setup(make_payhook, plugin)
    event = stripe_event("payment_intent.succeeded")
    body = json.dumps(event).encode()

    async def post() -> httpx.Response:
        # The request runs on the app's own event loop, beside its worker.
        transport = httpx.ASGITransport(app=harness.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payhook") as client:
            return await client.post(f"/{harness.tenant}", content=body, headers=signed_headers(body))

    request = harness.client.portal.start_task_soon(post)
    try:
        wait_until(lambda: plugin.calls == [("first", event["id"])], what="the first handler to start")
        request.cancel()  # the request gives up while its first run is under way
        # The run it never started is handed back, due now: the worker takes it at once,
        # while the request's first run is still under way.
        wait_until(lambda: ("second", event["id"]) in plugin.calls, what="the worker to start the second run")
        first, second = harness.runs()
        assert first.status == "running" and is_inline(first.lease_owner)
        assert second.status == "running" and not is_inline(second.lease_owner)
    finally:
        plugin.gate.set()
    # The run under way finishes in its thread, and records its end.
    wait_until(
        lambda: [run.status for run in harness.runs()] == ["succeeded", "succeeded"],
        what="both runs to succeed",
    )
    first, second = harness.runs()
    assert (first.attempts, second.attempts) == (1, 1)  # the hand-back undid the request's claim
    assert sorted(plugin.calls) == [("first", event["id"]), ("second", event["id"])]
    assert harness.failures() == []
