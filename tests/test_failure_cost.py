"""What a failing run costs: its traceback, the rows and text it writes, its back-off; and
that the core's re-run of a handler (SQLite) never repeats the handler's calls to Stripe."""

from __future__ import annotations

import threading
import traceback
from datetime import timedelta
from typing import Any

import httpx
import pytest
import stripe
from payhook import HandlerContext, hookimpl
from payhook.execute.processing import handler_traceback
from payhook.store.models import utcnow
from payhook.store.runs import FAILURE_ROWS_PER_RUN, MESSAGE_LIMIT, TRACEBACK_LIMIT
from payhook.testing import MakePayhook, PayhookHarness, fresh_event_id
from sqlalchemy import text

from .helpers import Effect, RecordingPlugin, create_effect_table, effects

PI_SUCCEEDED = "payment_intent.succeeded"


def setup(make_payhook: MakePayhook, plugin: RecordingPlugin, **options: Any) -> PayhookHarness:
    harness = make_payhook({plugin.name: plugin}, **options)
    create_effect_table(harness.store.engine)
    return harness


# -- tracebacks -----------------------------------------------------------------------------


def nested(depth: int) -> None:
    if depth == 0:
        raise ValueError("card service said no")
    nested(depth - 1)


def raised(func: Any) -> BaseException:
    try:
        func()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_a_traceback_reads_as_pythons_own() -> None:
    """Chained exceptions and collapsed repeats as Python prints them, column markers aside."""

    def wrapped() -> None:
        try:
            nested(6)
        except ValueError as exc:
            raise KeyError("order 7") from exc

    error = raised(wrapped)
    python = "".join(traceback.format_exception(error))
    without_markers = "".join(
        line
        for line in python.splitlines(keepends=True)
        if not line.strip() or set(line.strip()) - {"^", "~"}
    )
    assert handler_traceback(error) == without_markers
    assert "[Previous line repeated 3 more times]" in without_markers


def test_a_deep_traceback_keeps_its_first_and_last_frames() -> None:
    def alternating(depth: int) -> None:
        if depth == 0:
            raise RuntimeError("bottom")
        (alternating if depth % 2 else other)(depth - 1)

    def other(depth: int) -> None:
        alternating(depth)

    trace = handler_traceback(raised(lambda: alternating(300)))
    lines = trace.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: bottom"
    assert any(line.startswith("  [... ") and line.endswith(" more lines ...]") for line in lines)
    # 10 entries before the cut, 30 after, two lines each (file and source), and the rest.
    assert len(lines) <= 1 + 2 * 40 + 2


def test_a_huge_error_is_recorded_cut_to_its_bounds(make_payhook: MakePayhook, stripe_event: Any) -> None:
    """A message of a megabyte (say, a whole response body in the error) is cut, its start
    and its end kept; so is its traceback, whose last line names the error."""
    plugin = RecordingPlugin("rec")
    body = "<html>" + "x" * 1_000_000 + "</html>"
    plugin.fail("apply", lambda n: RuntimeError(body))
    harness = setup(make_payhook, plugin, processing={"max_attempts": 1})
    [run] = harness.send(stripe_event(PI_SUCCEEDED))
    assert run.status == "dead"
    assert run.last_error is not None and run.last_traceback is not None
    assert len(run.last_error) <= MESSAGE_LIMIT and run.last_error.startswith("<html>xxx")
    assert run.last_error.endswith("xxx</html>") and "more characters ...]" in run.last_error
    assert len(run.last_traceback) <= TRACEBACK_LIMIT
    assert run.last_traceback.startswith("Traceback (most recent call last):")
    assert run.last_traceback.endswith("xxx</html>\n")
    [failure] = harness.failures()
    assert (failure.message, failure.traceback) == (run.last_error, run.last_traceback)


# -- failure rows -----------------------------------------------------------------------------


def test_a_run_failing_again_and_again_keeps_its_first_and_latest_failures(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    attempts = FAILURE_ROWS_PER_RUN + 15
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError(f"down (call {n})"))
    harness = setup(make_payhook, plugin, processing={"max_attempts": attempts})
    event = stripe_event(PI_SUCCEEDED)
    harness.send(event, include_scheduled=True)
    [run] = harness.runs(event["id"])
    assert (run.status, run.attempts, run.last_error) == ("dead", attempts, f"down (call {attempts})")
    kept = [(f.attempt, f.message) for f in harness.failures()]
    latest = range(attempts - FAILURE_ROWS_PER_RUN + 2, attempts + 1)
    assert kept == [(1, "down (call 1)"), *((n, f"down (call {n})") for n in latest)]
    # An operator replaying it starts a new budget; the run still keeps as many rows.
    harness.rerun(event["id"])
    assert len(harness.failures()) == FAILURE_ROWS_PER_RUN
    assert harness.failures()[-1].message == f"down (call {attempts + 1})"


def test_other_runs_failure_rows_are_left_alone(make_payhook: MakePayhook, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec", {PI_SUCCEEDED: ["often", "once"]})
    plugin.fail("often", lambda n: RuntimeError("often"))
    plugin.fail("once", lambda n: RuntimeError("once") if n == 1 else None)
    harness = setup(make_payhook, plugin, processing={"max_attempts": FAILURE_ROWS_PER_RUN + 5})
    harness.send(stripe_event(PI_SUCCEEDED), include_scheduled=True)
    messages = [f.message for f in harness.failures()]
    assert messages.count("once") == 1 and messages.count("often") == FAILURE_ROWS_PER_RUN


# -- back-off ---------------------------------------------------------------------------------


def test_a_failed_run_is_not_claimed_again_before_its_backoff(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("down"))
    harness = setup(make_payhook, plugin, processing={"backoff_base": 30})
    before = utcnow()
    [run] = harness.send(stripe_event(PI_SUCCEEDED))
    assert (run.status, run.attempts) == ("failed", 1)
    assert run.next_attempt_at is not None and run.next_attempt_at >= before + timedelta(seconds=15)
    processor = harness.app.payhook.processor
    assert processor.claim(100) == []  # not due: no worker takes it at once
    assert plugin.calls.count(("apply", run.stripe_event_id)) == 1


# -- a re-run never calls Stripe again ---------------------------------------------------------


def commit_another_write(harness: PayhookHarness) -> None:
    """Another writer of the same SQLite file commits one row."""
    with harness.store.transaction() as conn:
        conn.execute(
            Effect.__table__.insert(),  # type: ignore[attr-defined]
            {"plugin": "other", "handler": "other", "stripe_event_id": fresh_event_id(), "tenant": "test"},
        )


class ReadCallWrite:
    """Reads, asks Stripe, writes: the pattern whose write loses the race when another writer
    commits between its read and its write. The first try of each run lets one in there."""

    def __init__(self, harness_of: Any, ask: str) -> None:
        self.harness_of = harness_of
        self.ask = ask
        self.tries: dict[str, int] = {}
        self.lock = threading.Lock()

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register(PI_SUCCEEDED, self.handle, name="handle")

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        with self.lock:
            tries = self.tries[event.id] = self.tries.get(event.id, 0) + 1
        seen = ctx.session.execute(text("SELECT count(*) FROM testing_effect")).scalar_one()
        if self.ask == "fetch_latest":
            status = ctx.fetch_latest()["status"]
        else:
            status = ctx.stripe.v1.payment_intents.retrieve(event.data.object.id).status
            assert isinstance(ctx.stripe, stripe.StripeClient)
        if tries == 1:
            commit_another_write(self.harness_of())  # between this run's read and its write
        ctx.session.add(
            Effect(plugin="rcw", handler=f"{status}-{seen}", stripe_event_id=event.id, tenant=ctx.tenant.slug)
        )


@pytest.mark.parametrize("ask", ["fetch_latest", "stripe"])
def test_a_handler_run_again_after_losing_the_race_reuses_its_answers_from_stripe(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any, ask: str
) -> None:
    """Real SQLite contention on every run's first try forces the re-run; Stripe (respx)
    is asked once per run, through `ctx.fetch_latest()` and through `ctx.stripe` alike."""
    runs = 20
    holder: list[PayhookHarness] = []
    plugin = ReadCallWrite(lambda: holder[0], ask)
    harness = make_payhook(
        {"rcw": plugin}, tenants={"test": {"plugins": ["rcw"], "stripe_api_key": "rk_test_rerun"}}
    )
    holder.append(harness)
    create_effect_table(harness.store.engine)
    route = stripe_api.get(url__regex=r"/v1/payment_intents/pi_rerun_\d+").mock(
        side_effect=lambda request: httpx.Response(
            200,
            json={"id": request.url.path.rsplit("/", 1)[1], "object": "payment_intent", "status": "canceled"},
        )
    )
    for number in range(runs):
        event = stripe_event(PI_SUCCEEDED, data__object__id=f"pi_rerun_{number}")
        assert harness.deliver(event).json()["status"] == "accepted"
    outcomes = harness.process()
    assert [outcome.status for outcome in outcomes] == ["succeeded"] * runs
    assert sorted(plugin.tries.values()) == [2] * runs  # every run lost its first race
    assert route.call_count == runs  # ...and asked Stripe once all the same
    rows = [row for row in effects(harness.store.engine) if row.plugin == "rcw"]
    assert len(rows) == runs and all(row.handler.startswith("canceled-") for row in rows)
    assert harness.failures() == []


def test_a_retry_after_a_failure_asks_stripe_afresh(
    make_payhook: MakePayhook, stripe_api: Any, stripe_event: Any
) -> None:
    """Only a re-run within one attempt reuses answers: the next attempt wants Stripe's news."""
    seen: list[str] = []

    class Flaky:
        @hookimpl
        def register_handlers(self, register: Any) -> None:
            register(PI_SUCCEEDED, self.handle, name="handle")

        def handle(self, event: Any, ctx: HandlerContext) -> None:
            seen.append(ctx.fetch_latest()["status"])
            if len(seen) == 1:
                raise RuntimeError("ledger down")

    harness = make_payhook(
        {"flaky": Flaky()}, tenants={"test": {"plugins": ["flaky"], "stripe_api_key": "rk_test_retry"}}
    )
    route = stripe_api.get("/v1/payment_intents/pi_retry").mock(
        side_effect=[
            httpx.Response(200, json={"id": "pi_retry", "object": "payment_intent", "status": "processing"}),
            httpx.Response(200, json={"id": "pi_retry", "object": "payment_intent", "status": "succeeded"}),
        ]
    )
    [run] = harness.send(stripe_event(PI_SUCCEEDED, data__object__id="pi_retry"), include_scheduled=True)
    assert run.status == "succeeded"
    assert seen == ["processing", "succeeded"] and route.call_count == 2
