"""Handler runs: one transaction each, failures captured, retries, dead runs, redeliveries."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from payhook import GiveUp, HandlerContext, RetryLater, Skip, hookimpl
from payhook.store.models import HandlerRun, utcnow
from payhook.testing import PayhookHarness, Run, store_backends, wait_until
from sqlalchemy import text, update
from sqlmodel import Session

from .helpers import Effect, RecordingPlugin, create_effect_table, effects

pytestmark = store_backends


def two_handlers() -> RecordingPlugin:
    return RecordingPlugin("rec", {"payment_intent.succeeded": ["good", "bad"]})


def setup(make_payhook: Any, plugin: RecordingPlugin, **options: Any) -> PayhookHarness:
    harness: PayhookHarness = make_payhook({plugin.name: plugin}, **options)
    create_effect_table(harness.store.engine)
    return harness


def run_of(harness: PayhookHarness, handler: str) -> Run:
    [run] = [run for run in harness.runs() if run.handler == handler]
    return run


def test_a_failing_handler_leaves_the_others_work_and_is_retried_until_dead(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = two_handlers()
    plugin.fail("bad", lambda n: ValueError(f"card service said no (call {n})"))
    harness = setup(make_payhook, plugin, processing={"max_attempts": 3})
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event)

    harness.process()
    assert [e.handler for e in effects(harness.store.engine)] == ["good"]  # bad's write rolled back
    bad = run_of(harness, "bad")
    assert (bad.status, bad.attempts, bad.last_error_type) == ("failed", 1, "ValueError")
    assert bad.last_error == "card service said no (call 1)"
    assert bad.last_traceback and "Traceback" in bad.last_traceback and "raise error" in bad.last_traceback
    # The first retry comes within 10 s (backoff_base 10, jitter 0.5-1.0).
    assert bad.next_attempt_at is not None and bad.finished_at is not None
    assert timedelta(seconds=4.9) <= bad.next_attempt_at - bad.finished_at <= timedelta(seconds=10)
    assert run_of(harness, "good").status == "succeeded"

    harness.process(include_scheduled=True)
    bad = run_of(harness, "bad")
    assert (bad.status, bad.attempts, bad.next_attempt_at) == ("dead", 3, None)
    failures = harness.failures()
    assert [(f.attempt, f.error_type, f.message) for f in failures] == [
        (n, "ValueError", f"card service said no (call {n})") for n in (1, 2, 3)
    ]
    assert all("Traceback" in f.traceback for f in failures)
    assert plugin.calls.count(("good", event["id"])) == 1
    assert [e.handler for e in effects(harness.store.engine)] == ["good"]


def test_backoff_grows_and_is_capped(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("down"))
    harness = setup(
        make_payhook, plugin, processing={"max_attempts": 10, "backoff_base": 10, "backoff_cap": 25}
    )
    harness.deliver(stripe_event("payment_intent.succeeded"))
    delays = []
    for _ in range(4):
        harness.process(include_scheduled=True, rounds=1)  # one attempt at a time
        run = run_of(harness, "apply")
        assert run.next_attempt_at and run.finished_at
        delays.append((run.next_attempt_at - run.finished_at).total_seconds())
    ceilings = [10, 20, 25, 25]
    assert all(
        ceiling / 2 - 0.1 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True)
    ), delays


def test_give_up_marks_dead_at_once_and_retry_later_uses_its_delay(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["quit", "later"]})
    plugin.fail("quit", lambda n: GiveUp("order 7 belongs to another tenant"))
    plugin.fail("later", lambda n: RetryLater("ledger busy", delay=120))
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.process()
    quit_run, later = run_of(harness, "quit"), run_of(harness, "later")
    assert (quit_run.status, quit_run.attempts, quit_run.last_error) == (
        "dead",
        1,
        "order 7 belongs to another tenant",
    )
    assert quit_run.last_error_type == "payhook.GiveUp"  # a public name, stable across refactorings
    assert later.status == "failed" and later.last_error == "ledger busy"
    assert later.next_attempt_at and later.finished_at
    assert 119 <= (later.next_attempt_at - later.finished_at).total_seconds() <= 121


def test_after_commit_work_runs_only_after_the_commit(make_payhook: Any, stripe_event: Any) -> None:
    seen: list[tuple[str, int]] = []

    class Plugin:
        fail = False

        def handle(self, event: Any, ctx: HandlerContext) -> None:
            ctx.session.add(Effect(plugin="p", handler="h", stripe_event_id=event.id, tenant="t"))
            ctx.after_commit(self.check, event.id, ctx.session.get_bind())
            if self.fail:
                raise RuntimeError("boom")

        def check(self, stripe_event_id: str, engine: Any) -> None:
            # A fresh connection sees the handler's row: it has been committed.
            with Session(engine) as session:
                count = session.execute(
                    text("SELECT count(*) FROM testing_effect WHERE stripe_event_id = :id"),
                    {"id": stripe_event_id},
                ).scalar_one()
            seen.append((stripe_event_id, count))

        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register("payment_intent.succeeded", self.handle, name="handle")

    plugin = Plugin()
    harness = make_payhook({"p": plugin})
    create_effect_table(harness.store.engine)
    ok = stripe_event("payment_intent.succeeded")
    harness.deliver(ok)
    harness.process()
    assert seen == [(ok["id"], 1)]
    plugin.fail = True
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.process()
    assert seen == [(ok["id"], 1)]  # the failed run's callback never ran


def test_redelivery_rearms_dead_runs(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("dependency down") if n <= 2 else None)
    harness = setup(make_payhook, plugin, processing={"max_attempts": 2})
    event = stripe_event("payment_intent.succeeded")
    [run] = harness.send(event, include_scheduled=True)
    assert run.status == "dead"

    response = harness.deliver(event)
    assert response.json() == {"status": "duplicate", "event": event["id"], "rearmed": 1}
    run = run_of(harness, "apply")
    assert (run.status, run.attempts, run.attempt_base) == ("pending", 2, 2)
    harness.process()
    run = run_of(harness, "apply")
    assert (run.status, run.attempts) == ("succeeded", 3)
    assert len(effects(harness.store.engine)) == 1
    assert len(harness.events()) == 1 and len(harness.runs()) == 1


def test_redelivery_of_a_done_or_running_event_never_runs_a_handler_twice(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    done, running = stripe_event("payment_intent.succeeded"), stripe_event("payment_intent.succeeded")
    harness.deliver(done)
    harness.process()
    harness.deliver(running)
    [claimed] = harness.app.payhook.processor.claim(10)  # a worker holds it now
    for event in (done, running):
        assert harness.deliver(event).json() == {"status": "duplicate", "event": event["id"]}
    assert harness.process() == []
    harness.app.payhook.processor.execute(claimed)
    assert harness.process() == []
    assert sorted(plugin.calls) == sorted([("apply", done["id"]), ("apply", running["id"])])
    assert len(effects(harness.store.engine)) == 2


def test_a_run_whose_lease_was_lost_does_not_commit(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    [claimed] = harness.app.payhook.processor.claim(10)
    with harness.store.transaction() as conn:  # another worker reclaimed it meanwhile
        conn.execute(update(HandlerRun).values(lease_token="someone-else"))
    outcome = harness.app.payhook.processor.execute(claimed)
    assert outcome.status == "lease_lost"
    assert effects(harness.store.engine) == []
    assert run_of(harness, "apply").status == "running"


def test_an_expired_lease_is_reclaimed_and_counts_as_an_attempt(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.app.payhook.processor.claim(10)  # ...and that worker dies
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    [outcome] = harness.process()
    assert outcome.status == "succeeded"
    run = run_of(harness, "apply")
    assert (run.status, run.attempts) == ("succeeded", 2)
    [failure] = harness.failures()
    assert (failure.attempt, failure.error_type) == (1, "payhook.LeaseExpired")
    assert len(effects(harness.store.engine)) == 1


def test_inline_mode_answers_500_when_a_handler_fails_and_reuses_the_event(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("flaky") if n == 1 else None)
    harness = setup(make_payhook, plugin, processing={"mode": "inline"})
    event = stripe_event("payment_intent.succeeded")
    first = harness.deliver(event)
    assert first.status_code == 500 and first.json()["error"] == "handler_failed"
    assert len(harness.events()) == 1 and run_of(harness, "apply").status == "failed"
    second = harness.deliver(event)  # Stripe retries
    assert second.status_code == 200 and second.json()["status"] == "duplicate"
    assert run_of(harness, "apply").status == "succeeded"
    assert len(harness.events()) == 1 and len(harness.runs()) == 1
    assert len(effects(harness.store.engine)) == 1
    third = harness.deliver(event)
    assert third.status_code == 200 and len(plugin.calls) == 2


def test_inline_mode_per_tenant_runs_before_answering(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin, tenants={"live": {"plugins": ["rec"], "mode": "inline"}})
    event = stripe_event("payment_intent.succeeded")
    assert harness.deliver(event, tenant="live").json()["status"] == "accepted"
    assert plugin.calls == [("apply", event["id"])]


def test_in_process_worker_runs_handlers(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin, processing={"worker": True})
    events = [stripe_event("payment_intent.succeeded") for _ in range(5)]
    for event in events:
        harness.deliver(event)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(effects(harness.store.engine)) < 5:
        time.sleep(0.05)
    assert sorted(e.stripe_event_id for e in effects(harness.store.engine)) == sorted(e["id"] for e in events)
    assert {run.status for run in harness.runs()} == {"succeeded"}


def test_tenants_run_only_their_plugins_and_share_event_ids(make_payhook: Any, stripe_event: Any) -> None:
    on, off = RecordingPlugin("on"), RecordingPlugin("off")
    harness = make_payhook(
        {"on": on, "off": off},
        tenants={"conf-a": {"plugins": ["on", "off"]}, "conf-b": {"plugins": ["on"]}},
    )
    create_effect_table(harness.store.engine)
    event = stripe_event("payment_intent.succeeded")
    assert harness.deliver(event, tenant="conf-a").json()["status"] == "accepted"
    assert harness.deliver(event, tenant="conf-b").json()["status"] == "accepted"
    harness.process()
    assert sorted((e.tenant, e.plugin) for e in effects(harness.store.engine)) == [
        ("conf-a", "off"),
        ("conf-a", "on"),
        ("conf-b", "on"),
    ]
    assert len(harness.events()) == 2


def test_observers_wrap_run_handler_and_see_failures_and_stored_events(
    make_payhook: Any, stripe_event: Any
) -> None:
    log: list[str] = []
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: KeyError("metadata"))

    class Observer:
        @hookimpl(wrapper=True)
        def run_handler(self, handler: Any, event: Any, ctx: HandlerContext) -> Any:
            log.append(f"before {handler.name}")
            try:
                return (yield)
            finally:
                log.append(f"after {handler.name}")

        @hookimpl
        def handler_failed(self, event: Any, ctx: HandlerContext, error: BaseException, dead: bool) -> None:
            log.append(f"failed {type(error).__name__} dead={dead}")

        @hookimpl
        def event_stored(self, event: Any, tenant: Any) -> None:
            log.append(f"stored {event.type} runs={event.runs} for {tenant.slug}")

    # An observer reaches only the tenants that enable it: conference B's payloads never
    # reach a plugin that only conference A turned on.
    harness = make_payhook(
        {"rec": plugin, "observer": Observer()},
        tenants={"test": {"plugins": ["rec", "observer"]}, "other": {"plugins": ["rec"]}},
    )
    create_effect_table(harness.store.engine)
    harness.deliver(stripe_event("payment_intent.succeeded"), tenant="other")
    harness.deliver(stripe_event("payment_intent.succeeded"))
    # event_stored runs off the event loop, after the answer: wait for it.
    wait_until(lambda: len(log) == 1)
    harness.process()
    assert log == [
        "stored payment_intent.succeeded runs=1 for test",
        "before apply",
        "after apply",
        "failed KeyError dead=False",
    ]


@pytest.mark.parametrize("mode", ["queued", "inline"])
def test_plugin_switched_off_for_a_tenant_after_runs_were_created(
    make_payhook: Any, stripe_event: Any, mode: str, payhook_database_url: str
) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    later = make_payhook({"rec": plugin}, tenants={"test": {"plugins": []}})
    later.process()
    run = run_of(later, "apply")
    assert run.status == "dead" and "not enabled for tenant 'test'" in (run.last_error or "")
    assert plugin.calls == []


def test_skip_records_the_reason_and_rolls_back(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: Skip("no order_id in metadata"))
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    [outcome] = harness.process()
    assert outcome.status == "skipped"
    run = run_of(harness, "apply")
    assert (run.status, run.last_error, run.attempts, run.next_attempt_at) == (
        "skipped",
        "no order_id in metadata",
        1,
        None,
    )
    assert effects(harness.store.engine) == [] and harness.failures() == []
    assert harness.process(include_scheduled=True) == []


def test_retry_later_still_respects_max_attempts(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RetryLater("not yet", delay=1))
    harness = setup(make_payhook, plugin, processing={"max_attempts": 3})
    [run] = harness.send(stripe_event("payment_intent.succeeded"), include_scheduled=True)
    assert (run.status, run.attempts) == ("dead", 3)


def test_a_runtime_can_start_again_after_stopping(make_payhook: Any, stripe_event: Any) -> None:
    from starlette.testclient import TestClient

    from .test_plugin_hooks import Mailer, Shop

    harness = make_payhook(
        {"shop": Shop(), "mailer": Mailer()}, tenants={"t": {"plugins": ["shop", "mailer"]}}
    )
    harness.close()  # stop...
    with TestClient(harness.app) as client:  # ...and start again: plugin hookspecs are added once
        assert client.get("/healthz").status_code == 200


def test_rerun_runs_succeeded_handlers_again(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event)
    harness.process()
    [outcome] = harness.rerun(event["id"])
    assert outcome.status == "succeeded"
    assert plugin.calls == [("apply", event["id"])] * 2
    assert run_of(harness, "apply").replay_count == 1


def test_per_plugin_retry_overrides(make_payhook: Any, stripe_event: Any) -> None:
    strict, lenient = RecordingPlugin("strict"), RecordingPlugin("lenient")
    for plugin in (strict, lenient):
        plugin.fail("apply", lambda n: RuntimeError("down"))
    harness = make_payhook(
        {"strict": strict, "lenient": lenient},
        processing={"max_attempts": 3, "plugins": {"strict": {"max_attempts": 1}}},
    )
    create_effect_table(harness.store.engine)
    runs = harness.send(stripe_event("payment_intent.succeeded"), include_scheduled=True)
    assert sorted((run.plugin, run.status, run.attempts) for run in runs) == [
        ("lenient", "dead", 3),
        ("strict", "dead", 1),
    ]


def test_a_handler_can_extend_its_lease(make_payhook: Any, stripe_event: Any, payhook_backend: str) -> None:
    seen: list[tuple[bool, Any, Any]] = []

    class Slow:
        def handle(self, event: Any, ctx: HandlerContext) -> None:
            before = ctx.session.get(HandlerRun, ctx.run_id)
            expires = before.lease_expires_at if before else None
            extended = ctx.extend_lease(3600)
            with Session(ctx.session.get_bind()) as other:
                after = other.get(HandlerRun, ctx.run_id) if payhook_backend == "postgresql" else None
                seen.append((extended, expires, after.lease_expires_at if after else None))

        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register("payment_intent.succeeded", self.handle, name="handle")

    harness = make_payhook({"slow": Slow()}, processing={"lease_seconds": 60})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    [outcome] = harness.process()
    assert outcome.status == "succeeded"
    [(extended, before, after)] = seen
    assert extended is True
    if payhook_backend == "postgresql":  # committed at once, visible to other workers
        assert before is not None and after is not None
        assert (after - before).total_seconds() > 3000
    # (On SQLite the running handler holds the write lock a claim needs: nobody can take over.)


def test_newer_event_applied_lets_a_handler_skip_a_stale_update(make_payhook: Any, stripe_event: Any) -> None:
    answers: dict[str, bool] = {}

    class Ordered:
        def handle(self, event: Any, ctx: HandlerContext) -> None:
            answers[event.id] = ctx.newer_event_applied()

        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register("payment_intent.*", self.handle, name="handle")

    harness = make_payhook({"ordered": Ordered()})
    newer = stripe_event("payment_intent.succeeded", created=2_000_000_000)
    older = stripe_event("payment_intent.payment_failed", created=1_900_000_000)
    other_object = stripe_event("payment_intent.payment_failed", created=1_800_000_000)
    other_object["data"]["object"]["id"] = "pi_another"
    harness.deliver(newer)
    harness.process()
    for event in (older, other_object):  # delivered late, out of order
        harness.deliver(event)
    harness.process()
    assert answers == {newer["id"]: False, older["id"]: True, other_object["id"]: False}


def test_a_run_that_waited_in_the_queue_renews_its_lease_or_yields(
    make_payhook: Any, stripe_event: Any
) -> None:
    import dataclasses

    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin, processing={"lease_seconds": 60})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.deliver(stripe_event("payment_intent.succeeded"))
    processor = harness.app.payhook.processor
    first, second = processor.claim(10)
    # Both waited 50 s in a worker's queue; meanwhile another worker took the second over.
    first, second = (dataclasses.replace(run, claimed_at=run.claimed_at - 50) for run in (first, second))
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).where(HandlerRun.id == second.id).values(lease_token="other"))  # type: ignore[arg-type]
    assert processor.execute(first).status == "succeeded"
    assert processor.execute(second).status == "lease_lost"
    assert plugin.calls == [("apply", first.stripe_event_id)]  # the taken-over run never started here


class WritesNothing:
    """A handler that never opens its session: its success mark is all there is to commit.

    `then` optionally registers after-commit work (which a deferred mark must not skip)."""

    def __init__(self, then: Any = None) -> None:
        self.calls: list[str] = []
        self.then = then

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        self.calls.append(event.id)
        if self.then is not None:
            ctx.after_commit(self.then, ctx.run_id)

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register("payment_intent.succeeded", self.handle, name="handle")


def observed_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """(run id, outcome) of every run counted in the metrics and log from now on."""
    import payhook.execute.processing

    seen: list[tuple[int, str]] = []
    real = payhook.execute.processing.run_observed

    def record(run: Any, outcome: Any, seconds: float) -> None:
        seen.append((run.id, outcome.status.value))
        real(run, outcome, seconds)

    monkeypatch.setattr(payhook.execute.processing, "run_observed", record)
    return seen


def test_a_run_that_wrote_nothing_is_succeeded_only_once_its_deferred_mark_commits(
    make_payhook: Any, stripe_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = WritesNothing()
    harness: PayhookHarness = make_payhook({"quiet": plugin})
    for _ in range(3):
        harness.deliver(stripe_event("payment_intent.succeeded"))
    processor = harness.app.payhook.processor
    observed = observed_outcomes(monkeypatch)
    claimed = processor.claim(10)
    waiting: list[Any] = []
    for run in claimed:
        processor.execute_or_defer(run, waiting.append)
    assert len(plugin.calls) == 3 and len(waiting) == 3
    # Handed over, not yet recorded: still running under their leases, and not counted.
    assert [run.status for run in harness.runs()] == ["running"] * 3
    assert observed == []

    outcomes = processor.mark_succeeded(waiting)

    assert [outcome.status for outcome in outcomes] == ["succeeded"] * 3
    assert [(run.status, run.lease_token) for run in harness.runs()] == [("succeeded", None)] * 3
    assert all(run.duration_ms is not None for run in harness.runs())
    assert observed == [(run.id, "succeeded") for run in claimed]


def test_a_deferred_mark_is_not_written_for_a_run_whose_lease_was_lost_meanwhile(
    make_payhook: Any, stripe_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = WritesNothing()
    harness: PayhookHarness = make_payhook({"quiet": plugin})
    for _ in range(2):
        harness.deliver(stripe_event("payment_intent.succeeded"))
    processor = harness.app.payhook.processor
    kept, lost = processor.claim(10)
    waiting: list[Any] = []
    for run in (kept, lost):
        processor.execute_or_defer(run, waiting.append)
    # While the marks wait, the second run's lease expires and another worker reclaims it.
    with harness.store.transaction() as conn:
        conn.execute(
            update(HandlerRun).where(HandlerRun.id == lost.id).values(lease_token="the-new-owner")  # type: ignore[arg-type]
        )
    observed = observed_outcomes(monkeypatch)

    outcomes = processor.mark_succeeded(waiting)

    assert [(outcome.run_id, outcome.status) for outcome in outcomes] == [
        (kept.id, "succeeded"),
        (lost.id, "lease_lost"),
    ]
    by_id = {run.id: run for run in harness.runs()}
    assert by_id[kept.id].status == "succeeded"
    # Left as its new owner has it: that worker decides what becomes of it.
    assert (by_id[lost.id].status, by_id[lost.id].lease_token) == ("running", "the-new-owner")
    assert observed == [(kept.id, "succeeded"), (lost.id, "lease_lost")]


def test_a_crash_before_the_deferred_mark_commits_runs_the_run_again(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = WritesNothing()
    harness: PayhookHarness = make_payhook({"quiet": plugin})
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event)
    processor = harness.app.payhook.processor
    [run] = processor.claim(10)
    processor.execute_or_defer(run, lambda _mark: None)  # the process dies holding the mark
    assert [r.status for r in harness.runs()] == ["running"]
    with harness.store.transaction() as conn:  # ...and its lease runs out
        conn.execute(update(HandlerRun).values(lease_expires_at=utcnow() - timedelta(seconds=1)))

    [outcome] = harness.process()

    assert outcome.status == "succeeded"
    [again] = harness.runs()
    assert (again.status, again.attempts) == ("succeeded", 2)
    assert [failure.error_type for failure in harness.failures()] == ["payhook.LeaseExpired"]
    assert plugin.calls == [event["id"], event["id"]]  # at least once: never lost


def test_runs_with_writes_or_after_commit_work_are_marked_in_their_own_thread(
    make_payhook: Any, stripe_event: Any
) -> None:
    seen: list[tuple[int, str]] = []
    harnesses: list[PayhookHarness] = []

    def after_commit(run_id: int) -> None:
        # The callback sees its run already succeeded: it ran after the mark committed.
        seen.append((run_id, next(run.status for run in harnesses[0].runs() if run.id == run_id)))

    harness: PayhookHarness = make_payhook(
        {"rec": RecordingPlugin("rec"), "quiet": WritesNothing(after_commit)}
    )
    harnesses.append(harness)
    create_effect_table(harness.store.engine)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    processor = harness.app.payhook.processor
    claimed = processor.claim(10)
    assert sorted(run.plugin for run in claimed) == ["quiet", "rec"]
    waiting: list[Any] = []
    for run in claimed:
        processor.execute_or_defer(run, waiting.append)

    assert waiting == []
    assert [run.status for run in harness.runs()] == ["succeeded", "succeeded"]
    assert len(effects(harness.store.engine)) == 1  # committed with its run's mark
    [quiet] = [run for run in claimed if run.plugin == "quiet"]
    assert seen == [(quiet.id, "succeeded")]


def test_a_run_that_wrote_and_lost_its_lease_commits_nothing_on_the_deferring_path(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    [claimed] = harness.app.payhook.processor.claim(10)
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).values(lease_token="someone-else"))
    waiting: list[Any] = []
    harness.app.payhook.processor.execute_or_defer(claimed, waiting.append)
    assert waiting == []
    assert effects(harness.store.engine) == []
    assert run_of(harness, "apply").status == "running"


class RaisesPerAttempt:
    """A handler that raises `errors[n - 1]` on attempt n (the same again if SQLite re-runs it)."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        raise self.errors[ctx.attempt - 1]

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register("payment_intent.succeeded", self.handle, name="handle")


def moved(error: BaseException) -> BaseException:
    """The same error as if its class were defined in another of payhook's modules."""
    cls = type(error)
    elsewhere = type(cls.__name__, (cls,), {"__module__": "payhook.somewhere.else"})
    copy: BaseException = elsewhere.__new__(elsewhere, *error.args)
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


def test_payhooks_own_errors_are_recorded_under_stable_names_wherever_they_are_defined(
    make_payhook: Any, stripe_event: Any
) -> None:
    from payhook import StoreUnavailable
    from payhook.store.sqlite import WriteConflict
    from payhook.store.sqlite_files import StoreFileProblem
    from payhook.stripe_api.clients import NoStripeKey
    from payhook.stripe_api.http import StripeTimeout

    stable = [
        (WriteConflict("another writer committed"), "payhook.WriteConflict"),
        (NoStripeKey("test"), "payhook.NoStripeKey"),
        (StoreUnavailable("no answer", reason="timeout"), "payhook.StoreUnavailable"),
        (StoreFileProblem("the file is gone", reason="deleted"), "payhook.StoreFileProblem"),
        (StripeTimeout("no complete answer within 3 s"), "payhook.StripeTimeout"),  # type: ignore[no-untyped-call]
    ]
    errors = [error for original, _ in stable for error in (original, moved(original))]
    harness: PayhookHarness = make_payhook(
        {"raises": RaisesPerAttempt(errors)}, processing={"max_attempts": len(errors)}
    )
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.process(include_scheduled=True)
    expected = [name for _, name in stable for _ in (1, 2)]
    assert [(f.attempt, f.error_type) for f in harness.failures()] == list(enumerate(expected, 1))
    [run] = harness.runs()
    assert (run.status, run.last_error_type) == ("dead", "payhook.StripeTimeout")


def test_an_error_text_no_store_can_keep_is_recorded_escaped(make_payhook: Any, stripe_event: Any) -> None:
    """NUL (PostgreSQL's text refuses it) and a lone surrogate (no UTF-8 at all, so neither
    store takes it) in a handler's error are recorded as escapes, on both stores alike."""
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["nul", "surrogate", "skips"]})
    plugin.fail("nul", lambda n: RuntimeError("a\x00b"))
    plugin.fail("surrogate", lambda n: RuntimeError("card holder \udce9"))
    plugin.fail("skips", lambda n: Skip("nothing for \x00"))
    harness = setup(make_payhook, plugin, processing={"max_attempts": 1})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    outcomes = harness.process()
    assert sorted(outcome.status for outcome in outcomes) == ["dead", "dead", "skipped"]
    nul, surrogate, skips = (run_of(harness, name) for name in ("nul", "surrogate", "skips"))
    assert (nul.status, nul.last_error_type, nul.last_error) == ("dead", "RuntimeError", "a\\x00b")
    assert nul.last_traceback is not None and "RuntimeError: a\\x00b" in nul.last_traceback
    assert (surrogate.status, surrogate.last_error) == ("dead", "card holder \\udce9")
    assert (skips.status, skips.last_error) == ("skipped", "nothing for \\x00")
    recorded = {f.message for f in harness.failures()}
    assert recorded == {"a\\x00b", "card holder \\udce9"}


def test_a_lost_last_attempt_kills_the_run_under_that_attempts_number(
    make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness = setup(make_payhook, plugin, processing={"max_attempts": 1})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.app.payhook.processor.claim(10)  # ...and that worker dies, on the only attempt
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    [outcome] = harness.process()
    assert outcome.status == "dead"
    run = run_of(harness, "apply")
    assert (run.status, run.attempts, run.lease_token) == ("dead", 1, None)
    [failure] = harness.failures()
    assert (failure.attempt, failure.error_type) == (1, "payhook.LeaseExpired")
    # Whoever held it: a worker, or an inline request.
    assert failure.message.startswith("attempt 1 did not finish before its lease expired")
    assert "worker or inline request" in failure.message
    assert plugin.calls == []


def test_a_recorded_traceback_starts_at_the_handlers_own_frames(make_payhook: Any, stripe_event: Any) -> None:
    """payhook's and pluggy's frames above the handler call are left out; the exception line stays."""
    plugin = two_handlers()
    plugin.fail("bad", lambda n: GiveUp("order 4242 does not exist"))
    harness = setup(make_payhook, plugin)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    harness.process()
    trace = run_of(harness, "bad").last_traceback
    assert trace is not None
    lines = trace.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert (
        lines[1].startswith('  File "') and 'helpers.py", line' in lines[1] and lines[1].endswith(", in run")
    )
    assert lines[-1] == "payhook.GiveUp: order 4242 does not exist"
    assert "pluggy" not in trace and "processing.py" not in trace and "host.py" not in trace
    assert len(lines) <= 5
