"""The run lifecycle: every allowed transition works, every other one is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from payhook.store.models import HandlerRun, RunStatus, utcnow
from payhook.store.runs import (
    CREATIONS,
    TRANSITIONS,
    ClaimedRun,
    EventPayload,
    Failure,
    IllegalTransition,
    Lease,
    Runs,
)
from payhook.testing import PayhookHarness, store_backends
from sqlalchemy import delete, update

from .helpers import RecordingPlugin, create_effect_table

TOKEN = "the-claim-of-this-test"
# An inline request's claim, made before its runs exist.
LEASE = Lease("a-request inline", "the-claim-of-a-request", 60)


def put_run_in(harness: PayhookHarness, status: RunStatus) -> HandlerRun:
    """A run in `status`, due, with an expired lease held under TOKEN."""
    [run] = harness.runs()
    past = utcnow() - timedelta(seconds=5)
    with harness.store.transaction() as conn:
        conn.execute(
            update(HandlerRun)
            .where(HandlerRun.id == run.id)  # type: ignore[arg-type]
            .values(
                status=status.value,
                attempts=1,
                lease_token=TOKEN,
                lease_expires_at=past,
                next_attempt_at=past,
            )
        )
    [run] = harness.runs()
    return run


def claimed(run: HandlerRun) -> ClaimedRun:
    assert run.id is not None
    return ClaimedRun(
        id=run.id,
        event_id=run.event_id,
        plugin=run.plugin,
        handler=run.handler,
        attempts=run.attempts,
        attempt_base=0,
        lease_token=TOKEN,
        reclaimed=False,
        replayed=False,
        tenant="test",
        stripe_event_id="evt",
        event_type="payment_intent.succeeded",
        payload=EventPayload("{}"),
    )


def attempt(transition: str, runs: Runs, harness: PayhookHarness, run: HandlerRun) -> bool:
    """Ask for `transition` on `run`; True if the store accepted it."""
    failure = Failure("ValueError", "boom")
    actions: dict[str, Callable[[], Any]] = {
        "claim": lambda: bool(runs.claim("test-owner", 10, 60)),
        "adopt": lambda: _with_cursor(
            harness, lambda cursor: runs.adopt(cursor, run.event_id, utcnow(), LEASE)
        ),
        "renew_lease": lambda: runs.renew_lease(claimed(run), 60),
        "extend_lease": lambda: runs.extend_lease(claimed(run).id, TOKEN, 60),
        "succeed": lambda: runs.succeed_alone(claimed(run), 1.0),
        "skip": lambda: runs.skip(claimed(run), "nothing to do", 1.0),
        "fail": lambda: runs.fail(claimed(run), failure, next_attempt_at=utcnow()),
        "note_lost_attempt": lambda: runs.note_lost_attempt(claimed(run), failure, dead=False),
        "release": lambda: runs.release([claimed(run)]),
        "abandon": lambda: runs.abandon([claimed(run)], failure),
        "rearm": lambda: _with_cursor(harness, lambda cursor: runs.rearm(cursor, run.event_id, utcnow())),
        "replay": lambda: _replay(harness, runs, run),
    }
    before = _state(harness)
    result = actions[transition]()
    changed = _state(harness) != before
    if transition in ("release", "adopt"):
        return changed  # these report nothing themselves
    assert bool(result) == changed, f"{transition} said {result!r} but the row changed={changed}"
    return changed


def _state(harness: PayhookHarness) -> tuple[Any, ...]:
    [run] = harness.runs()
    return (run.status, run.attempts, run.lease_token, run.lease_expires_at, run.last_error, run.replay_count)


def _with_cursor(harness: PayhookHarness, action: Callable[[Any], int | None]) -> int | None:
    with harness.store.transaction() as conn:
        cursor = conn.connection.cursor()
        try:
            return action(cursor)
        finally:
            cursor.close()


def _replay(harness: PayhookHarness, runs: Runs, run: HandlerRun) -> bool:
    allowed = sorted(status.value for status in TRANSITIONS["replay"][0])
    with harness.store.transaction() as conn:
        assert run.id is not None
        runs.replay(conn, [run.id], statuses=allowed, requested_by="test", now=utcnow())
    return harness.runs()[0].replay_count > run.replay_count


@store_backends
@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
def test_each_transition_moves_only_from_its_source_states(
    transition: str, make_payhook: Any, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness: PayhookHarness = make_payhook({"rec": plugin})
    create_effect_table(harness.store.engine)
    harness.deliver(stripe_event("payment_intent.succeeded"))
    runs = harness.app.payhook.runs
    sources, target = TRANSITIONS[transition]
    for status in RunStatus:
        run = put_run_in(harness, status)
        moved = attempt(transition, runs, harness, run)
        assert moved == (status in sources), f"{transition} from {status.value}"
        if moved and target is not None:
            assert harness.runs()[0].status == target.value, f"{transition} from {status.value}"


@store_backends
def test_replay_refuses_runs_that_are_about_to_run(make_payhook: Any, stripe_event: Any) -> None:
    harness: PayhookHarness = make_payhook({"rec": RecordingPlugin("rec")})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    runs = harness.app.payhook.runs
    with pytest.raises(IllegalTransition), harness.store.transaction() as conn:
        runs.replay(conn, [1], statuses=["running"], requested_by="test", now=utcnow())


@store_backends
def test_runs_of_one_event_share_one_parsed_event(make_payhook: Any, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec", {"payment_intent.succeeded": ["first", "second"]})
    harness: PayhookHarness = make_payhook({"rec": plugin})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    first, second = harness.app.payhook.processor.claim(10)
    assert first.payload is second.payload
    assert first.payload.event is second.payload.event


@store_backends
def test_succeed_many_moves_only_running_runs_whose_claim_holds(make_payhook: Any, stripe_event: Any) -> None:
    harness: PayhookHarness = make_payhook({"rec": RecordingPlugin("rec")})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    runs = harness.app.payhook.runs
    for status in RunStatus:
        run = put_run_in(harness, status)
        before = _state(harness)
        marked = runs.succeed_many([(claimed(run), 2.5)])
        assert (marked == {run.id}) == (status == RunStatus.RUNNING), status.value
        assert (_state(harness) != before) == (status == RunStatus.RUNNING), status.value
    run = put_run_in(harness, RunStatus.RUNNING)
    stale = dataclasses.replace(claimed(run), lease_token="an-older-claim")
    assert runs.succeed_many([(stale, 1.0)]) == set()
    assert harness.runs()[0].status == "running"
    assert runs.succeed_many([]) == set()


@store_backends
@pytest.mark.parametrize("creation", sorted(CREATIONS))
def test_each_creation_starts_its_runs_in_its_state(
    creation: str, make_payhook: Any, stripe_event: Any
) -> None:
    harness: PayhookHarness = make_payhook({"rec": RecordingPlugin("rec")})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    [stored] = harness.runs()
    with harness.store.transaction() as conn:
        conn.execute(delete(HandlerRun))
    payhook = harness.app.payhook
    handlers = payhook.plugins.handlers_for("payment_intent.succeeded", payhook.config.tenants["test"])
    runs = payhook.runs
    create: dict[str, Callable[[Any], int]] = {
        "create": lambda cursor: runs.create(cursor, stored.event_id, handlers, utcnow()),
        "create_owned": lambda cursor: runs.create_owned(cursor, stored.event_id, handlers, utcnow(), LEASE),
    }
    assert _with_cursor(harness, create[creation]) == 1
    [run] = harness.runs()
    assert run.status == CREATIONS[creation].value
    if creation == "create":
        assert (run.attempts, run.lease_token) == (0, None)
        return
    # Owned from creation: its first attempt, under the request's claim.
    assert (run.attempts, run.lease_owner, run.lease_token) == (1, LEASE.owner, LEASE.token)
    assert (
        runs.claim("a-worker", 10, 60) == [] and runs.claim("a-worker", 10, 60, event_id=run.event_id) == []
    )
    [owned] = runs.owned(run.event_id, LEASE)
    assert (owned.id, owned.attempts, owned.lease_token, owned.reclaimed) == (run.id, 1, LEASE.token, False)
    assert runs.owned(run.event_id, Lease("someone else", "another-claim", 60)) == []


@store_backends
def test_an_owned_run_whose_lease_ran_out_is_the_workers(make_payhook: Any, stripe_event: Any) -> None:
    """The request that held it died: a worker reclaims it as any lost lease."""
    harness: PayhookHarness = make_payhook(
        {"rec": RecordingPlugin("rec")}, tenants={"test": {"plugins": ["rec"]}}
    )
    harness.deliver(stripe_event("payment_intent.succeeded"))
    [stored] = harness.runs()
    with harness.store.transaction() as conn:
        conn.execute(delete(HandlerRun))
    payhook = harness.app.payhook
    handlers = payhook.plugins.handlers_for("payment_intent.succeeded", payhook.config.tenants["test"])
    short = Lease("a-request inline", "a-short-claim", -1)  # already expired
    _with_cursor(
        harness, lambda cursor: payhook.runs.create_owned(cursor, stored.event_id, handlers, utcnow(), short)
    )
    [reclaimed] = payhook.runs.claim("a-worker", 10, 60)
    assert (reclaimed.reclaimed, reclaimed.attempts) == (True, 2)
    assert payhook.runs.owned(stored.event_id, short) == []


def lifecycle_table() -> set[str]:
    """The transitions docs/processing.md's lifecycle table names, one per row or several."""
    text = (Path(__file__).parent.parent / "docs" / "processing.md").read_text()
    table = text.split("| transition | from | to | who asks |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    return {name.strip() for row in rows for name in row.split("|")[1].split(",")}


def test_the_tables_are_the_pictures() -> None:
    """Each transition the docs and the module's picture draw is in the tables the statements
    and the every-state test are built from, and the tables hold nothing else."""
    from payhook.store import runs

    drawn = lifecycle_table()
    assert drawn == set(CREATIONS) | set(TRANSITIONS)
    picture = runs.__doc__ or ""
    assert [name for name in sorted(drawn) if name not in picture] == []


def failure_rows(harness: PayhookHarness) -> list[tuple[int, str]]:
    return [(failure.attempt, failure.error_type) for failure in harness.failures()]


@store_backends
@pytest.mark.parametrize("dead", [False, True], ids=["retried", "dead"])
def test_a_lost_attempt_is_recorded_under_its_own_number(
    dead: bool, make_payhook: Any, stripe_event: Any
) -> None:
    harness: PayhookHarness = make_payhook({"rec": RecordingPlugin("rec")})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    run = put_run_in(harness, RunStatus.RUNNING)
    # Reclaimed: attempt 2 lost its lease, and this claim counted attempt 3.
    reclaim = dataclasses.replace(claimed(run), attempts=3, reclaimed=True)
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).values(attempts=3))
    failure = Failure("payhook.LeaseExpired", "attempt 2 did not finish")
    assert harness.app.payhook.runs.note_lost_attempt(reclaim, failure, dead=dead)
    assert failure_rows(harness) == [(2, "payhook.LeaseExpired")]
    [after] = harness.runs()
    if dead:  # this claim's attempt never started: undone
        assert (after.status, after.attempts, after.lease_token) == ("dead", 2, None)
    else:
        assert (after.status, after.attempts, after.lease_token) == ("running", 3, TOKEN)
    assert after.last_error_type == "payhook.LeaseExpired"


@store_backends
@pytest.mark.parametrize("earlier", ["failed", "dead"])
def test_release_puts_a_run_back_as_its_current_budget_had_it(
    earlier: str, make_payhook: Any, stripe_event: Any
) -> None:
    """Failed if an attempt of the budget it runs on failed already; a run re-armed (or
    replayed) has a fresh budget, so released before its first new attempt it is pending."""
    harness: PayhookHarness = make_payhook({"rec": RecordingPlugin("rec")})
    harness.deliver(stripe_event("payment_intent.succeeded"))
    run = put_run_in(harness, RunStatus(earlier))
    with harness.store.transaction() as conn:
        conn.execute(update(HandlerRun).values(attempts=3))
    runs = harness.app.payhook.runs
    # An inline redelivery: re-arm what is dead, adopt what waits, then the request gives up.
    lease = Lease("a-request inline", "a-redelivery's-claim", 60)

    def take_over(cursor: Any) -> None:
        runs.rearm(cursor, run.event_id, utcnow())
        runs.adopt(cursor, run.event_id, utcnow(), lease)

    _with_cursor(harness, take_over)
    [adopted] = runs.owned(run.event_id, lease)
    assert adopted.attempts == 4
    runs.release([adopted])
    [after] = harness.runs()
    assert (after.status, after.attempts, after.lease_token) == (
        "pending" if earlier == "dead" else "failed",
        3,
        None,
    )
