"""payhook.testing itself: what the harness returns, and what its helpers catch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
from payhook.testing import FailedAttempt, MakePayhook, Run, assert_migrations_match, store_backends
from sqlalchemy import Column, Integer, Table
from sqlmodel import SQLModel

from .helpers import RecordingPlugin, create_effect_table

pytestmark = store_backends


def failing_plugin(make_payhook: MakePayhook, **processing: Any) -> Any:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError(f"down ({n})"))
    harness = make_payhook({"rec": plugin}, processing={"max_attempts": 5, **processing})
    create_effect_table(harness.store.engine)
    return harness


def test_send_delivers_processes_and_returns_the_events_runs_as_frozen_records(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = make_payhook({"rec": RecordingPlugin("rec")})
    create_effect_table(harness.store.engine)
    other = stripe_event("payment_intent.succeeded")
    harness.send(other)
    event = stripe_event("payment_intent.succeeded")

    [run] = harness.send(event)

    assert isinstance(run, Run)
    assert (run.stripe_event_id, run.tenant, run.plugin, run.handler) == (event["id"], "test", "rec", "apply")
    assert (run.status, run.attempts, run.last_error) == ("succeeded", 1, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "dead"  # type: ignore[misc]
    assert [r.stripe_event_id for r in harness.runs()] == [other["id"], event["id"]]


def test_send_fails_the_test_on_an_answer_it_did_not_expect(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = make_payhook({"rec": RecordingPlugin("rec")})
    create_effect_table(harness.store.engine)
    event = stripe_event("payment_intent.succeeded")
    harness.send(event)
    with pytest.raises(AssertionError, match="expected 'accepted', payhook answered 'duplicate'"):
        harness.send(event)
    with pytest.raises(AssertionError, match="payhook answered 404"):
        harness.send(stripe_event("payment_intent.succeeded"), tenant="nobody")
    assert harness.send(stripe_event("customer.created"), expect="ignored") == []


def test_process_rounds_gives_each_failing_run_exactly_one_more_attempt(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = failing_plugin(make_payhook)
    [run] = harness.send(stripe_event("payment_intent.succeeded"))
    assert (run.status, run.attempts) == ("failed", 1)

    for attempts in (2, 3):
        [outcome] = harness.process(include_scheduled=True, rounds=1)
        assert outcome.status == "failed"
        assert [r.attempts for r in harness.runs()] == [attempts]

    harness.process(include_scheduled=True)  # until it is done with
    [run] = harness.runs()
    assert (run.status, run.attempts) == ("dead", 5)


def test_failures_are_frozen_records_of_each_failed_attempt(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    harness = failing_plugin(make_payhook, max_attempts=2)
    event = stripe_event("payment_intent.succeeded")
    harness.send(event, include_scheduled=True)

    failures = harness.failures(event["id"])
    assert all(isinstance(failure, FailedAttempt) for failure in failures)
    assert [(f.attempt, f.error_type, f.message) for f in failures] == [
        (1, "RuntimeError", "down (1)"),
        (2, "RuntimeError", "down (2)"),
    ]
    assert harness.failures(stripe_event("payment_intent.succeeded")["id"]) == []


def test_claim_and_execute_let_a_test_decide_when_a_run_runs(
    make_payhook: MakePayhook, stripe_event: Any
) -> None:
    plugin = RecordingPlugin("rec")
    harness = make_payhook({"rec": plugin})
    create_effect_table(harness.store.engine)
    event = stripe_event("payment_intent.succeeded")
    harness.deliver(event)

    [claimed] = harness.claim(event["id"])
    assert [run.status for run in harness.runs()] == ["running"] and plugin.calls == []
    assert harness.execute(claimed).status == "succeeded"
    assert plugin.calls == [("apply", event["id"])]


@pytest.fixture
def stray_model() -> Iterator[None]:
    """A model table named like registration's that no migration creates, for one test."""
    table = Table("registration_stray", SQLModel.metadata, Column("id", Integer, primary_key=True))
    try:
        yield
    finally:
        SQLModel.metadata.remove(table)


@pytest.mark.skipif(
    "registration" not in {ep.name for ep in entry_points(group="payhook")},
    reason="payhook-registration is not installed",
)
def test_assert_migrations_match_names_a_table_the_migrations_forgot(
    payhook_database_url: str, stray_model: None
) -> None:
    with pytest.raises(
        AssertionError, match=r"plugin 'registration': its migrations and its models differ.*add_table"
    ):
        assert_migrations_match("registration", payhook_database_url)


def test_assert_migrations_match_says_when_the_plugin_is_not_installed(payhook_database_url: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="no 'payhook' entry point named 'not-installed'"):
        assert_migrations_match("not-installed", payhook_database_url)
