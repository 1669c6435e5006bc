"""Replay selects exactly the runs it should; pruning keeps redeliveries recognised."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from payhook.ops.replay import ReplaySelection, replay
from payhook.ops.retention import prune
from payhook.store.models import Event, HandlerRun, utcnow
from payhook.testing import PayhookHarness, store_backends
from sqlalchemy import update

from .helpers import RecordingPlugin, create_effect_table

pytestmark = store_backends


def scenario(make_payhook: Any, stripe_event: Any) -> tuple[PayhookHarness, dict[str, dict[str, Any]]]:
    """Two tenants, two plugins; some runs succeed, some die."""
    good = RecordingPlugin("good", {"payment_intent.succeeded": ["apply"], "charge.refunded": ["apply"]})
    bad = RecordingPlugin("bad", {"payment_intent.succeeded": ["apply"]})
    bad.fail("apply", lambda n: RuntimeError("bug"))
    harness: PayhookHarness = make_payhook(
        {"good": good, "bad": bad},
        tenants={"a": {"plugins": ["good", "bad"]}, "b": {"plugins": ["good", "bad"]}},
        processing={"max_attempts": 1},
    )
    create_effect_table(harness.store.engine)
    events = {
        "a-pi": stripe_event("payment_intent.succeeded"),
        "a-refund": stripe_event("charge.refunded.full"),
        "b-pi": stripe_event("payment_intent.succeeded"),
    }
    for key, event in events.items():
        harness.deliver(event, tenant=key.split("-")[0])
    harness.process()
    return harness, events


def statuses(harness: PayhookHarness) -> dict[tuple[str, str], str]:
    by_id = {event.id: event.stripe_event_id for event in harness.events()}
    return {(by_id[run.event_id], run.plugin): run.status for run in harness.runs()}


def test_replay_defaults_to_failed_and_dead_runs_matching_every_filter(
    make_payhook: Any, stripe_event: Any
) -> None:
    harness, events = scenario(make_payhook, stripe_event)
    before = statuses(harness)
    assert before[(events["a-pi"]["id"], "bad")] == "dead"

    result = replay(harness.store, ReplaySelection(tenant="a", plugin="bad"), requested_by="ops:alice")
    assert result.rearmed == 1 and result.created == 0
    after = statuses(harness)
    assert after[(events["a-pi"]["id"], "bad")] == "pending"
    assert after[(events["b-pi"]["id"], "bad")] == "dead"  # other tenant untouched
    assert after[(events["a-pi"]["id"], "good")] == "succeeded"  # only failed by default
    [run] = [run for run in harness.runs() if run.status == "pending"]
    assert (run.replay_count, run.replayed_by, run.attempt_base) == (1, "ops:alice", run.attempts)
    assert run.replayed_at is not None


def test_replay_by_type_time_range_and_one_event(make_payhook: Any, stripe_event: Any) -> None:
    harness, events = scenario(make_payhook, stripe_event)
    now = utcnow()
    assert (
        replay(
            harness.store, ReplaySelection(received_before=now - timedelta(hours=1)), requested_by="x"
        ).rearmed
        == 0
    )
    assert replay(harness.store, ReplaySelection(event_type="charge.refunded"), requested_by="x").rearmed == 0
    one = replay(harness.store, ReplaySelection(stripe_event_id=events["b-pi"]["id"]), requested_by="x")
    assert one.rearmed == 1
    assert statuses(harness)[(events["b-pi"]["id"], "bad")] == "pending"


def test_replay_of_succeeded_runs_and_of_a_plugin_installed_later(
    make_payhook: Any, stripe_event: Any
) -> None:
    _harness, events = scenario(make_payhook, stripe_event)
    late = RecordingPlugin("late", {"charge.refunded": ["apply"]})
    later = make_payhook(
        {"good": RecordingPlugin("good", {"charge.refunded": ["apply"]}), "late": late},
        tenants={"a": {"plugins": ["good", "late"]}, "b": {"plugins": ["good"]}},
    )
    result = replay(
        later.store,
        ReplaySelection(event_type="charge.refunded"),
        requested_by="ops",
        only_failed=False,
        plugins=later.app.payhook.plugins,
        config=later.config,
    )
    assert (result.created, result.rearmed) == (1, 1)
    later.process()
    assert late.calls == [("apply", events["a-refund"]["id"])]
    assert statuses(later)[(events["a-refund"]["id"], "good")] == "succeeded"


def test_prune_keeps_duplicates_recognised(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    harness: PayhookHarness = make_payhook({"rec": plugin})
    create_effect_table(harness.store.engine)
    old, unfinished, recent = (stripe_event("payment_intent.succeeded") for _ in range(3))
    for event in (old, unfinished, recent):
        harness.deliver(event)
    harness.process()
    unfinished_id = next(e.id for e in harness.events() if e.stripe_event_id == unfinished["id"])
    with harness.store.transaction() as conn:
        conn.execute(
            update(Event)
            .where(Event.stripe_event_id != recent["id"])
            .values(  # type: ignore[arg-type]
                received_at=utcnow() - timedelta(days=40)
            )
        )
        conn.execute(update(HandlerRun).where(HandlerRun.event_id == unfinished_id).values(status="failed"))  # type: ignore[arg-type]

    result = prune(harness.store, older_than_days=30)
    assert (result.events, result.runs) == (1, 1)
    by_id = {e.stripe_event_id: e for e in harness.events()}
    assert by_id[old["id"]].payload == "" and by_id[old["id"]].pruned_at is not None
    assert by_id[unfinished["id"]].payload and by_id[recent["id"]].payload
    assert len(harness.runs()) == 2

    again = harness.deliver(old)
    assert again.json() == {"status": "duplicate", "event": old["id"]}
    assert harness.process() == []
    assert plugin.calls.count(("apply", old["id"])) == 1
    assert prune(harness.store, older_than_days=30).events == 0
    assert replay(harness.store, ReplaySelection(stripe_event_id=old["id"]), requested_by="x").rearmed == 0
